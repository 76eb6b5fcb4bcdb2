"""Downstream analysis of segmentation heatmaps (papers/digipathai-ensemble-segmentation-framework.txt):
`heatmap_features` (Table 5), `pn_stage` (metastasis typing and CAMELYON17 pN-staging), `tumour_burden`
(PAIP viable tumour burden); the commands on segment's outputs: `pn_stage_run` (`slidegrid pn-stage`) and
`burden_run` (`slidegrid burden`), with `tables` (CSV in and out, one MLflow run)."""
