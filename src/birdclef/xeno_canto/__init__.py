"""xeno-canto scraper stage: every record of every competition species, politely and resumably.

The `xc_scrape` stage extends the training catalog with recordings from the
xeno-canto API v3 (`GET <base_url>?query=...&key=...&per_page=...&page=...`):

1. one tag query per taxonomy species (`sp:"genus species"`, plus `grp:` from
   `grp_by_class` and the free `extra_query` tags), every page 1..numPages,
   de-duplicated by recording id across pages and species; the collected count
   is compared with `numRecordings` and a total that changed during the crawl
   is recorded in the manifest;
2. one shared rate limiter for every HTTP request of the stage (API pages,
   downloads and each redirect hop), retries with exponential backoff on 429,
   5xx, timeouts and dropped connections, honouring `Retry-After`; 401 and 400
   stop the stage with the API's message. The key is read from an environment
   variable and masked in every log line and error message;
3. filters (in this order, each skip counted under its reason):
   `unknown_species`, `in_train`, `restricted`, `license`, `quality`,
   `too_long`, `species_cap`, then at download time `download_failed` and
   `corrupt_audio`;
4. downloads (redirects followed), converted to 32 kHz mono Ogg Vorbis and
   written as `<primary_label>/XC<id>.ogg` rows in train.csv's schema, plus
   the raw API metadata as parquet.

Resume: everything fetched is cached outside the stage's declared outputs (by
default `<dirname(out_rows)>/cache/`): API pages as JSON keyed by a hash of the
request, each recording converted to Ogg once (written atomically, verified on
reuse), undecodable downloads remembered with their reason. A killed run
restarted asks the server for nothing it already has and ends with the same
table.

Modules:

- `parsers`: small parsers of API values (lengths, licences, Retry-After, ids, ratings, URLs);
- `limiter`: `RateLimiter`, the one rate limit every HTTP request of the stage waits for;
- `client`: `XenoCantoClient` (sessions, redirects followed hop by hop, retries, masked key)
  and its errors;
- `query`: tag queries, the page cache and one species' crawl over every page;
- `settings`: `DEFAULT_SETTINGS` and their validation;
- `species`: the taxonomy's species, which are queried, API names to labels;
- `selection`: de-duplication, the filters (`SKIP_REASONS`) and the per-species cap;
- `download`: the audio cache and one recording downloaded and converted to Ogg;
- `tables`: a kept recording as a train.csv row, the raw API records as a frame;
- `summary`: the manifest's headline and the closing log lines;
- `stage`: `scrape_stage`, the stage itself.
"""

from birdclef.xeno_canto.client import (
    USER_AGENT,
    DownloadFailedError,
    XenoCantoClient,
    XenoCantoError,
)
from birdclef.xeno_canto.limiter import RateLimiter
from birdclef.xeno_canto.parsers import (
    license_excluded,
    license_name,
    parse_length,
    parse_retry_after,
    train_xc_ids,
    xc_id_of,
)
from birdclef.xeno_canto.query import PageCache, build_query, check_extra_query, crawl_species
from birdclef.xeno_canto.selection import SKIP_REASONS
from birdclef.xeno_canto.settings import DEFAULT_SETTINGS, resolve_settings
from birdclef.xeno_canto.stage import scrape_stage

__all__ = [
    "DEFAULT_SETTINGS",
    "DownloadFailedError",
    "PageCache",
    "RateLimiter",
    "SKIP_REASONS",
    "USER_AGENT",
    "XenoCantoClient",
    "XenoCantoError",
    "build_query",
    "check_extra_query",
    "crawl_species",
    "license_excluded",
    "license_name",
    "parse_length",
    "parse_retry_after",
    "resolve_settings",
    "scrape_stage",
    "train_xc_ids",
    "xc_id_of",
]
