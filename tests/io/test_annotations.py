"""GeoJSON (QuPath) and ASAP XML polygons <-> masks, with holes; malformed files are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slidegrid.errors import ConfigError
from slidegrid.io.annotations import mask_to_geojson, rasterize, read_annotations, write_geojson


def _ring_mask():
    m = np.zeros((200, 200), bool)
    yy, xx = np.mgrid[0:200, 0:200]
    r = np.hypot(xx - 100, yy - 100)
    m[(r < 80) & (r > 30)] = True  # a ring: polygon with a hole
    return m


def test_geojson_round_trip_with_hole(tmp_path):
    mask = _ring_mask()
    gj = mask_to_geojson(mask, mask_mpp=4.0, slide_mpp=0.5, label="Tumor")
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 1
    feat = gj["features"][0]
    assert feat["properties"]["classification"]["name"] == "Tumor" and len(feat["geometry"]["coordinates"]) == 2
    write_geojson(gj, str(tmp_path / "a.geojson"))
    back = rasterize(read_annotations(str(tmp_path / "a.geojson")), (1600, 1600), 0.5, 4.0)
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.95 and not back[100, 100]  # the hole stays a hole


def test_asap_xml_with_exclusion_hole(tmp_path):
    def coords(pts):
        return "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(pts))

    outer = [(100, 100), (900, 100), (900, 900), (100, 900)]
    hole = [(400, 400), (600, 400), (600, 600), (400, 600)]
    xml = ('<ASAP_Annotations><Annotations>'
           f'<Annotation Name="a" Type="Polygon" PartOfGroup="_0"><Coordinates>{coords(outer)}</Coordinates></Annotation>'
           f'<Annotation Name="b" Type="Polygon" PartOfGroup="_2"><Coordinates>{coords(hole)}</Coordinates></Annotation>'
           '</Annotations></ASAP_Annotations>')
    (tmp_path / "a.xml").write_text(xml)
    anns = read_annotations(str(tmp_path / "a.xml"))
    assert len(anns) == 1 and len(anns[0].holes) == 1
    mask = rasterize(anns, (1000, 1000), 1.0, 10.0)
    assert mask[20, 20] and not mask[50, 50] and not mask[5, 5]
    assert mask.sum() == pytest.approx(80 * 80 - 20 * 20, rel=0.1)


def test_qupath_multipolygon_and_classification(tmp_path):
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Stroma"}},
         "geometry": {"type": "MultiPolygon", "coordinates": [[[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],
                                                              [[[20, 20], [30, 20], [30, 30], [20, 20]]]]}}]}
    (tmp_path / "q.geojson").write_text(json.dumps(gj))
    anns = read_annotations(str(tmp_path / "q.geojson"))
    assert [a.label for a in anns] == ["Stroma", "Stroma"]
    assert not rasterize(anns, (40, 40), 1.0, 1.0, labels=["Tumor"]).any()


@pytest.mark.parametrize("content,name", [("{not json", "bad.geojson"), ("<xml", "bad.xml"),
                                          ('{"type": "Polygon", "coordinates": 5}', "odd.geojson")])
def test_malformed_files_name_the_file(tmp_path, content, name):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError) as err:
        read_annotations(str(tmp_path / name))
    assert name in str(err.value)
