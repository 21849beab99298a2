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
    return [int(h[i : i + 2], 16) for i in (0, 2, 4)]


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
        feats.append(
            {
                "type": "Feature",
                "id": f"cell-{i}",
                "geometry": {"type": "Point", "coordinates": [float(points.yx[i, 1]), float(points.yx[i, 0])]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": name, "color": _rgb(colors.get(name, "#ffffff"))},
                    "measurements": meas,
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "features": feats,
        "properties": {
            "mpp": points.mpp,
            "source": points.source,
            "classes": list(points.classes),
            "threshold": points.threshold,
            "adapted": points.adapted,
        },
    }


def _dumps(doc: dict, path) -> str:
    """JSON text of ``doc``; NaN or infinite numbers (not JSON) are refused by name."""
    try:
        return json.dumps(doc, allow_nan=False)
    except ValueError:
        raise InputError(
            f"{path}: the points hold NaN or infinite values (not valid JSON); "
            "check the positions and scores, or write a CSV"
        ) from None


def write_geojson(points: CellPoints, path: str | Path) -> Path:
    """Write points as QuPath GeoJSON atomically."""
    text = _dumps(points_to_geojson(points), path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


POINT_GEOMETRIES = ("Point", "MultiPoint", "Polygon", "MultiPolygon", "GeometryCollection")


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to be GeoJSON; export it again") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not valid JSON ({' '.join(str(e).split())})") from None


def _xy(value, path, fid) -> tuple[float, float]:
    """One GeoJSON position ``[x, y, ...]`` -> finite (x, y) floats, else InputError."""
    try:
        if isinstance(value[0], (bool, str)) or isinstance(value[1], (bool, str)):
            raise TypeError
        x, y = float(value[0]), float(value[1])
    except (IndexError, KeyError, TypeError, ValueError):
        raise InputError(
            f"{path}: feature {fid} has malformed coordinates {str(value)[:40]}; expected numbers [x, y]"
        ) from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise InputError(f"{path}: feature {fid} has a NaN or infinite coordinate; fix or remove it")
    return x, y


def _centres(g, path, fid, depth: int = 0) -> list[tuple[float, float]]:
    """(x, y) cell positions of one geometry: a Point, each point of a MultiPoint, the mean vertex of a
    Polygon's outer ring (each polygon of a MultiPolygon), every member of a GeometryCollection; no
    geometry: none. Other types are refused by name."""
    if g is None:
        return []
    kind = g.get("type") if isinstance(g, dict) else None
    coords = g.get("coordinates") if isinstance(g, dict) else None
    try:
        if kind == "Point":
            return [_xy(coords, path, fid)]
        if kind == "MultiPoint":
            return [_xy(c, path, fid) for c in coords]
        if kind == "Polygon":
            ring = [_xy(c, path, fid) for c in coords[0]]
            return [tuple(np.mean(ring, axis=0))] if ring else []
        if kind == "MultiPolygon":
            return [pt for poly in coords for pt in _centres({"type": "Polygon", "coordinates": poly}, path, fid)]
        if kind == "GeometryCollection" and depth < 8:
            return [pt for m in g.get("geometries") for pt in _centres(m, path, fid, depth + 1)]
    except (IndexError, KeyError, TypeError):
        raise InputError(f"{path}: feature {fid} has a malformed {kind}; export it again") from None
    raise InputError(
        f"{path}: feature {fid} is a {str(kind)[:40]}; pathreview reads cells as "
        f"{', '.join(POINT_GEOMETRIES)} - remove it or export detections only"
    )


def _class_name(props: dict, path, fid) -> tuple[str, list | None]:
    """``(name, colour)`` of a feature's ``classification``: QuPath's ``{"name", "color"}`` or a string."""
    cl = props.get("classification")
    if cl is None:
        return "unclassified", None
    if isinstance(cl, str):
        return cl or "unclassified", None
    if isinstance(cl, dict) and isinstance(cl.get("name", ""), str):
        color = cl.get("color")
        ok = (
            isinstance(color, list)
            and len(color) >= 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 255 for v in color[:3])
        )
        return cl.get("name") or "unclassified", color if ok else None
    raise InputError(
        f"{path}: feature {fid} has a classification that is neither a name nor "
        '{"name": ..., "color": [r, g, b]}; fix or remove it'
    )


def read_geojson(path: str | Path, classes: list[str] | None = None) -> CellPoints:
    """Read the cells of a QuPath / pathreview GeoJSON as CellPoints: Point and MultiPoint features (one
    cell per point), Polygon / MultiPolygon centroids, GeometryCollections of these; features without a
    geometry are skipped, other geometry types, malformed or non-finite coordinates are refused
    (InputError naming the feature)."""
    path = Path(path)
    doc = _load_json(path)
    feats = doc.get("features") if isinstance(doc, dict) else doc
    if not isinstance(feats, list):
        raise InputError(f"{path}: not a GeoJSON FeatureCollection")
    yx, names, colors, meas = [], [], {}, []
    for i, f in enumerate(feats):
        if not isinstance(f, dict):
            raise InputError(f"{path}: feature {i} is not a JSON object; export it again")
        fid = f.get("id", i) if isinstance(f.get("id", i), (str, int)) else i
        props = f.get("properties") if isinstance(f.get("properties"), dict) else {}
        centres = _centres(f.get("geometry"), path, fid)
        if not centres:
            continue
        name, color = _class_name(props, path, fid)
        if color is not None:
            colors[name] = _hex(color)
        m = props.get("measurements") if isinstance(props.get("measurements"), dict) else {}
        for x, y in centres:
            yx.append((float(y), float(x)))
            names.append(name)
            meas.append(m)
    doc_props = doc.get("properties") if isinstance(doc, dict) and isinstance(doc.get("properties"), dict) else {}
    if classes is None:
        listed = doc_props.get("classes")
        if isinstance(listed, str):
            listed = [listed]  # one class name, not its letters
        elif listed is not None and not (isinstance(listed, list) and all(isinstance(c, str) for c in listed)):
            raise InputError(f"{path}: properties.classes must be a list of class names; fix or remove it")
        classes = list(dict.fromkeys(listed or dict.fromkeys(names)))
    for n in names:
        if n not in classes:
            classes.append(n)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], np.int64)
    k = len(classes)
    probs = np.zeros((len(names), k), np.float32)
    scores = np.ones(len(names), np.float32)
    for i, m in enumerate(meas):
        scores[i] = _finite(m.get("score"), 1.0)
        row = [m.get(f"p_{c}") for c in classes]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in row):
            probs[i] = row
        else:
            probs[i, labels[i]] = 1.0
    mpp = doc_props.get("mpp")
    mpp = float(mpp) if isinstance(mpp, (int, float)) and not isinstance(mpp, bool) and 0 < mpp < 1e3 else None
    source = doc_props.get("source") if isinstance(doc_props.get("source"), str) else str(path)
    pts = CellPoints(np.asarray(yx, np.float32).reshape(-1, 2), labels, scores, probs, classes, mpp, None, source)
    pts.colors = {**class_colors(classes), **colors}
    return pts


def _finite(v, default: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if np.isfinite(f) else default


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


# ---- reading point tables (pathreview / dataset / QuPath CSV or TSV) ------------------------------

_CLASS_COLUMNS = ("class", "label", "classification", "Class", "Classification", "name")
_UM_COLUMNS = (("Centroid Y µm", "Centroid X µm"), ("Centroid Y um", "Centroid X um"), ("y_um", "x_um"))
_PX_COLUMNS = (("y", "x"), ("Y", "X"), ("Centroid Y px", "Centroid X px"))


def read_points_table(path: str | Path, classes: list[str] | None = None) -> dict[str, CellPoints]:
    """Cell points from a CSV/TSV: this plugin's export (``x,y,x_um,y_um,class,score,p_*``), a points
    dataset's ``points.csv`` (``image,split,x,y,label``; one entry per image) or a QuPath measurement
    export (``Class``, ``Centroid X µm``/``Centroid Y µm``).

    Returns ``{image name (or ""): CellPoints}``. Pixel columns win over micron ones; with microns only,
    ``yx`` is in µm and ``mpp`` is 1.0 (one unit = one µm). With both, ``mpp`` is their ratio.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read as text ({e})") from None
    lines = text.splitlines()
    if not lines:
        raise InputError(f"{path}: empty file")
    delim = "\t" if lines[0].count("\t") > lines[0].count(",") else ","
    rows = list(csv.DictReader(lines, delimiter=delim))
    head = set(rows[0]) if rows else set(next(csv.reader(lines[:1], delimiter=delim)))
    px = next((c for c in _PX_COLUMNS if set(c) <= head), None)
    um = next((c for c in _UM_COLUMNS if set(c) <= head), None)
    if px is None and um is None:
        raise InputError(
            f"{path}: no point coordinates; expected columns x,y (pixels) or 'Centroid X µm','Centroid Y µm' (QuPath)"
        )
    cls_col = next((c for c in _CLASS_COLUMNS if c in head), None)
    img_col = next((c for c in ("image", "Image") if c in head), None)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get(img_col, "") if img_col else "", []).append(r)
    if not groups:
        groups[""] = []
    if cls_col and classes is None:
        classes = _default_classes((r.get(cls_col) or "").strip() or "unlabeled" for r in rows)
    out = {}
    for name, rs in groups.items():
        try:
            if px is not None:
                yx = np.array([[float(r[px[0]]), float(r[px[1]])] for r in rs], np.float32).reshape(-1, 2)
            else:
                yx = np.array([[float(r[um[0]]), float(r[um[1]])] for r in rs], np.float32).reshape(-1, 2)
        except (TypeError, ValueError):
            raise InputError(f"{path}: a coordinate is not a number") from None
        mpp = 1.0 if px is None else None
        if px is not None and um is not None and len(rs):
            x_px = np.array([float(r[px[1]]) for r in rs])
            x_um = np.array([float(r[um[1]]) if r[um[1]] not in ("", None) else np.nan for r in rs])
            ok = np.isfinite(x_um) & (x_px > 1)
            if ok.any():
                mpp = float(np.median(x_um[ok] / x_px[ok]))
        names = [(r.get(cls_col) or "").strip() or "unlabeled" if cls_col else "cell" for r in rs]
        cl = list(classes) if classes is not None else _default_classes(names)
        for n in dict.fromkeys(names):
            if n not in cl:
                cl.append(n)
        index = {c: i for i, c in enumerate(cl)}
        labels = np.array([index[n] for n in names], np.int64)
        scores = np.array([_num(r.get("score"), 1.0) for r in rs], np.float32)
        probs = np.zeros((len(rs), len(cl)), np.float32)
        if rs and all(f"p_{c}" in head for c in cl):
            probs[:] = [[_num(r[f"p_{c}"], 0.0) for c in cl] for r in rs]
        else:
            probs[np.arange(len(rs)), labels] = 1.0
        out[name] = CellPoints(yx, labels, scores, probs, cl, mpp, None, str(path), class_colors(cl))
    return out


def _num(v, default: float) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _default_classes(names) -> list[str]:
    """Sorted class names, ``others`` then ``unlabeled`` last (the dataset order)."""
    uniq = set(names)
    tail = [n for n in ("others", "unlabeled") if n in uniq]
    return sorted(uniq - set(tail)) + tail


def read_points_file(path: str | Path) -> dict[str, CellPoints]:
    """GeoJSON / JSON or CSV / TSV -> ``{name: CellPoints}`` (see read_geojson, read_points_table)."""
    p = Path(path)
    if p.suffix.lower() in (".geojson", ".json"):
        return {p.stem: read_geojson(p)}
    return {(f"{p.stem} {k}" if k else p.stem): v for k, v in read_points_table(p).items()}


# ---- labels -> GeoJSON polygons -----------------------------------------------------------------


def labels_to_geojson(
    labels: np.ndarray, mpp: float | None = None, class_name: str = "nucleus", color: str = "#ffe119", min_area: int = 1
) -> dict:
    """Instance labels (H, W) -> QuPath FeatureCollection of Polygon ``detection`` features.

    One polygon per instance: the outer boundary of its largest connected part (x then y, closed ring;
    pixel-centre coordinates like the point exports, so the boundary runs half a pixel outside the
    centres of the edge pixels), ``measurements``: label and area in pixels.
    """
    from scipy import ndimage
    from skimage.measure import find_contours

    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "iu":
        raise InputError(f"labels: expected a 2-D integer label image, got {lab.dtype} {lab.shape}")
    feats = []
    for k, sl in enumerate(ndimage.find_objects(np.maximum(lab, 0))):
        if sl is None:
            continue
        value = k + 1
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        m = lab[sl] == value
        area = int(m.sum())
        if area < min_area:
            continue
        parts, n = ndimage.label(m)
        if n > 1:
            m = parts == (np.argmax(np.bincount(parts.ravel())[1:]) + 1)
        cs = find_contours(np.pad(m, 1).astype(np.float32), 0.5)
        ring = max(cs, key=len) - 1 + np.array([sl[0].start, sl[1].start])  # (row, col)
        ring = np.vstack([ring, ring[:1]])
        feats.append(
            {
                "type": "Feature",
                "id": f"object-{value}",
                "geometry": {"type": "Polygon", "coordinates": [[[float(x), float(y)] for y, x in ring]]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": class_name, "color": _rgb(color)},
                    "measurements": {"label": value, "area_px": area},
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats, "properties": {"mpp": mpp, "classes": [class_name]}}


def write_labels_geojson(labels: np.ndarray, path: str | Path, mpp: float | None = None, **kw) -> Path:
    """Write instance labels as QuPath polygon GeoJSON atomically."""
    text = _dumps(labels_to_geojson(labels, mpp, **kw), path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def read_geojson_polygons(path: str | Path) -> tuple[list[np.ndarray], list[str], dict]:
    """Polygon (outer rings) and MultiPolygon features of a GeoJSON -> (list of (K, 2) (row, col) arrays,
    class names, {class: hex colour}); Point features are skipped (see read_geojson)."""
    path = Path(path)
    doc = _load_json(path)
    feats = doc.get("features") if isinstance(doc, dict) else doc
    rings, names, colors = [], [], {}
    for i, f in enumerate(feats if isinstance(feats, list) else []):
        if not isinstance(f, dict):
            raise InputError(f"{path}: feature {i} is not a JSON object; export it again")
        fid = f.get("id", i) if isinstance(f.get("id", i), (str, int)) else i
        g = f.get("geometry") if isinstance(f.get("geometry"), dict) else {}
        polys = (
            [g.get("coordinates")]
            if g.get("type") == "Polygon"
            else (g.get("coordinates") if g.get("type") == "MultiPolygon" else [])
        )
        props = f.get("properties") if isinstance(f.get("properties"), dict) else {}
        name, color = _class_name(props, path, fid)
        if color is not None:
            colors[name] = _hex(color)
        for poly in polys if isinstance(polys, list) else [None]:
            try:
                ring = np.asarray(poly[0], np.float64)[:, :2]
                if not np.isfinite(ring).all():
                    raise ValueError
            except (IndexError, TypeError, ValueError):
                raise InputError(f"{path}: feature {fid} has a malformed polygon") from None
            if len(ring) >= 3:
                rings.append(ring[:, ::-1].copy())
                names.append(name)
    return rings, names, colors
