"""From run files to tables and figures: gathering files, records, groups over seeds, statistics,
ablation tables, output formats and plots."""
