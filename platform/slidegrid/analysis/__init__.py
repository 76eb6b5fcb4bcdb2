"""Downstream analysis of segmentation heatmaps (papers/digipathai-ensemble-segmentation-framework.txt):
`heatmap_features` (Table 5), `pn_stage` (metastasis typing and CAMELYON17 pN-staging), `tumour_burden`
(PAIP viable tumour burden)."""
