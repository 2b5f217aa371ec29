# Catalog: every labelled recording (train.csv, plus scraped rows when enabled, plus the
# data.extra_roots folders, labels mapped onto the taxonomy by scientific name).


rule catalog:
    input:
        unpack(xc_inputs),
        unpack(extra_root_inputs),
        train_csv=root_path("train.csv"),
        taxonomy=root_path("taxonomy.csv"),
        audio_dir=root_path("train_audio"),
    output:
        catalog=f"{stage_dir('catalog', CATALOG_TAG)}/catalog.parquet",
        manifest=f"{stage_dir('catalog', CATALOG_TAG)}/manifest.json",
    log:
        log_path("catalog", CATALOG_TAG),
    benchmark:
        benchmark_path("catalog", CATALOG_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 4
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=CATALOG_SETTINGS,
        tag=CATALOG_TAG,
        upstream={"xc_scrape": XC_TAG},
    script:
        "../workflow_scripts/catalog.py"
