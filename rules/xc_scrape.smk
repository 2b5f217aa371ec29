# xeno-canto: extra recordings of the competition's species (off by default).


rule xc_scrape:
    input:
        train_csv=root_path("train.csv"),
        taxonomy=root_path("taxonomy.csv"),
    output:
        rows=f"{stage_dir('xc_scrape', XC_TAG)}/train_xc.csv",
        metadata=f"{stage_dir('xc_scrape', XC_TAG)}/metadata.parquet",
        audio=directory(f"{stage_dir('xc_scrape', XC_TAG)}/audio"),
        manifest=f"{stage_dir('xc_scrape', XC_TAG)}/manifest.json",
    log:
        log_path("xc_scrape", XC_TAG),
    benchmark:
        benchmark_path("xc_scrape", XC_TAG)
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=24 * 60,
    params:
        settings=XC_SETTINGS,
        tag=XC_TAG,
    script:
        "../workflow_scripts/xc_scrape.py"
