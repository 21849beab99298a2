"""Exchange formats for cell points: QuPath-compatible GeoJSON and CSV.

GeoJSON follows QuPath's export: a FeatureCollection of Point features with
``properties.objectType = "detection"``, ``classification: {name, color: [r, g, b]}`` and
``measurements`` (score, p_<class>). Coordinates are (x, y) in level-0 pixels, as QuPath uses.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .points import CellPoints
from .weights import class_colors


def _rgb(hex_color: str) -> list[int]:
    h = hex_color.lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb[:3])


def points_to_geojson(points: CellPoints) -> dict:
    """CellPoints -> GeoJSON FeatureCollection (dict)."""
    colors = points.colors or class_colors(points.classes)
    table = points.table()
    feats = []
    for i in range(len(points)):
        name = str(table["class"][i])
        meas = {k: float(v[i]) for k, v in table.items() if k != "class"}
        feats.append({
            "type": "Feature",
            "id": f"cell-{i}",
            "geometry": {"type": "Point", "coordinates": [float(points.yx[i, 1]), float(points.yx[i, 0])]},
            "properties": {"objectType": "detection",
                           "classification": {"name": name, "color": _rgb(colors.get(name, "#ffffff"))},
                           "measurements": meas},
        })
    return {"type": "FeatureCollection", "features": feats,
            "properties": {"mpp": points.mpp, "source": points.source, "classes": list(points.classes)}}


def write_geojson(points: CellPoints, path: str | Path) -> Path:
    """Write points as QuPath GeoJSON atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(points_to_geojson(points)))
    return Path(path)


def read_geojson(path: str | Path, classes: list[str] | None = None) -> CellPoints:
    """Read Point features (and Polygon centroids) of a QuPath / pathreview GeoJSON as CellPoints."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    feats = doc.get("features") if isinstance(doc, dict) else doc
    if not isinstance(feats, list):
        raise InputError(f"{path}: not a GeoJSON FeatureCollection")
    yx, names, colors, meas = [], [], {}, []
    for f in feats:
        g = (f or {}).get("geometry") or {}
        try:
            if g.get("type") == "Point":
                x, y = g["coordinates"][:2]
            elif g.get("type") == "Polygon":
                ring = np.asarray(g["coordinates"][0], float)
                x, y = ring[:, 0].mean(), ring[:, 1].mean()
            else:
                continue
        except (KeyError, IndexError, TypeError, ValueError):
            raise InputError(f"{path}: feature {f.get('id', '?')} has malformed coordinates") from None
        props = f.get("properties") or {}
        cl = props.get("classification") or {}
        name = cl.get("name", "unclassified")
        if isinstance(cl.get("color"), list):
            colors[name] = _hex(cl["color"])
        yx.append((float(y), float(x)))
        names.append(name)
        meas.append(props.get("measurements") or {})
    doc_props = doc.get("properties", {}) if isinstance(doc, dict) else {}
    if classes is None:
        classes = list(doc_props.get("classes") or dict.fromkeys(names))
    for n in names:
        if n not in classes:
            classes.append(n)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], np.int64)
    k = len(classes)
    probs = np.zeros((len(names), k), np.float32)
    scores = np.ones(len(names), np.float32)
    for i, m in enumerate(meas):
        scores[i] = float(m.get("score", 1.0))
        row = [m.get(f"p_{c}") for c in classes]
        if all(v is not None for v in row):
            probs[i] = row
        else:
            probs[i, labels[i]] = 1.0
    pts = CellPoints(np.asarray(yx, np.float32).reshape(-1, 2), labels, scores, probs, classes,
                     doc_props.get("mpp"), None, doc_props.get("source", str(path)))
    pts.colors = {**class_colors(classes), **colors}
    return pts


def write_points_csv(points: CellPoints, path: str | Path) -> Path:
    """CSV with x, y (pixels), x_um, y_um (when mpp known), class, score, p_<class>."""
    table = points.table()
    cols = ["x", "y", "x_um", "y_um"] + list(table)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        mpp = points.mpp
        for i in range(len(points)):
            y, x = points.yx[i]
            row = [f"{x:.2f}", f"{y:.2f}", f"{x * mpp:.3f}" if mpp else "", f"{y * mpp:.3f}" if mpp else ""]
            row += [table["class"][i]] + [f"{float(table[c][i]):.4f}" for c in list(table)[1:]]
            w.writerow(row)
    return Path(path)
