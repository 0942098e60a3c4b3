"""A small real segmentation dataset built from the ``ndev-sampledata``
package.

Source
    ``ndev_sampledata/samples/scratch-assay-labeled-10T-2Ch.tiff`` from the
    PyPI package ``ndev-sampledata`` (Tim Monko, BSD-3-Clause licence, see the
    package's ``dist-info/licenses/LICENSE``). It is one OME-TIFF, ``uint16``,
    axes ``CTYX`` = ``(4, 10, 210, 576)``: a 10-frame time-lapse of a wound
    healing (scratch) assay at 0.619 um/px with four channels

    ====  ==========  ====================================================
    C     name        content
    ====  ==========  ====================================================
    0     H3342       Hoechst 33342 nuclear stain (fluorescence)
    1     oblique     oblique transmitted light (cell bodies)
    2     nuclei      instance labels of nuclei (0 = none, ~60-80 / frame)
    3     cyto        instance labels of cells (0 = none, ~65-100 / frame)
    ====  ==========  ====================================================

    Only ``tifffile`` reads it here; the package's own loader needs bioio.
    Consecutive frames are not near-duplicates (the nuclei masks of adjacent
    frames overlap with IoU < 0.12), so a split by frame is a fair split.

Classes
    ``0 background`` (no instance in either label channel), ``1 cytoplasm``
    (``cyto`` id > 0), ``2 nucleus`` (``nuclei`` id > 0; nucleus wins where
    both are set, and the ~1 % of nucleus pixels outside any cell are nucleus
    too). Background shrinks over time as the scratch closes. The labels are
    not exhaustive: a few cells inside the scratch carry no label.

Images
    Each image channel is scaled per frame from its 0.5/99.5 percentiles to
    ``[0, 255]``. The PNG holds, in RGB order, ``(Hoechst, oblique,
    oblique)``: the transmitted-light picture in cyan with the nuclei in red,
    so both the nucleus and the cytoplasm cue reach a 3-channel model. Files
    are written with ``cv2`` (stored as a normal RGB PNG, read back as BGR by
    MMSeg's ``LoadImageFromFile`` like any other dataset).

Tiling
    Frames keep their native resolution (nuclei are only ~10 px across) and
    are cut into ``size x size`` tiles on the smallest evenly spaced grid that
    covers the frame (tiles overlap a little): with ``size=128`` that is
    2 x 5 = 10 tiles per frame, i.e. 80 train / 20 val tiles for the default
    8/2 frame split. A frame smaller than ``size`` is first upscaled
    (bilinear image, nearest labels) so its short side equals ``size``.
    Tile names ``t{frame}_y{top}_x{left}.png`` record where they come from.
"""
import importlib.util
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

SAMPLE_FILE = 'scratch-assay-labeled-10T-2Ch.tiff'
CLASSES = ('background', 'cytoplasm', 'nucleus')
PALETTE = [[0, 0, 0], [60, 180, 75], [0, 130, 200]]
# frames 3 and 7 match the class balance of all 10 frames (cytoplasm ~50 %)
# better than the last two, where the scratch has almost closed
DEFAULT_VAL_FRAMES = (3, 7)
# bump when the conversion changes so old caches are rebuilt
FORMAT_VERSION = 1

_INSTALL_HINT = ('pip install --no-deps ndev-sampledata && pip install '
                 'tifffile (see requirements/demo.txt: the package is only '
                 'the data, its own dependencies are not needed)')


@DATASETS.register_module()
class ScratchAssayDataset(BaseSegDataset):
    """Scratch-assay microscopy tiles: background / cytoplasm / nucleus.

    Reads the layout written by :func:`prepare_scratch_assay`
    (``img_dir/{train,val}/*.png``, ``ann_dir/{train,val}/*.png``). If
    ``data_root`` holds no prepared dataset yet (no ``meta.json``), it is
    built there first from the installed ``ndev-sampledata`` package with
    the default parameters (128x128 tiles, frames 3 and 7 for validation);
    in a distributed run rank 0 builds it while the others wait.

    Args:
        prepare (bool): Build the dataset when ``data_root`` lacks it.
            Defaults to True; with False a missing dataset is an error that
            says how to build it.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 prepare: bool = True,
                 **kwargs) -> None:
        data_root = kwargs.get('data_root')
        if data_root and read_meta(data_root) is None and \
                not kwargs.get('lazy_init', False):
            _prepare_once(data_root, prepare)
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)


def _prepare_once(data_root: str, prepare: bool) -> None:
    """Build the dataset in ``data_root`` (rank 0 only), or explain."""
    how = (f'python -c "from mmseg_robust.datasets import '
           f'prepare_scratch_assay; prepare_scratch_assay({data_root!r})"')
    if not prepare:
        raise FileNotFoundError(
            f'error: no scratch-assay dataset in {data_root} (no meta.json). '
            f'Build it with: {how}, or set prepare=True in the dataset '
            'config')
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    if rank == 0:
        print_log(
            f'no scratch-assay dataset in {data_root}: building it from '
            'the ndev-sampledata package',
            logger='current')
        try:
            prepare_scratch_assay(data_root)
        except ImportError as err:
            raise ImportError(
                f'error: no scratch-assay dataset in {data_root}, and it '
                f'cannot be built: {err}. Install the data, then run the '
                f'command again (or build it yourself: {how})') from err
    if world_size > 1:
        barrier()


def _sample_path() -> str:
    """Path of the scratch-assay TIFF inside the installed package."""
    # find_spec does not run the package's __init__, which imports bioio
    spec = importlib.util.find_spec('ndev_sampledata')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'ndev-sampledata is not installed: {_INSTALL_HINT}')
    pkg_dir = list(spec.submodule_search_locations)[0]
    path = osp.join(pkg_dir, 'samples', SAMPLE_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} not found; the installed ndev-sampledata does not ship '
            f'the scratch-assay sample ({_INSTALL_HINT})')
    return path


def _source_version() -> str:
    try:
        from importlib.metadata import version
        return version('ndev-sampledata')
    except Exception:  # metadata is informative only
        return 'unknown'


def _normalize(channel: np.ndarray,
               low: float = 0.5,
               high: float = 99.5) -> np.ndarray:
    """Percentile-clip one 2D channel to ``uint8``."""
    lo, hi = np.percentile(channel, (low, high))
    scaled = (channel.astype(np.float32) - lo) / max(float(hi - lo), 1e-6)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def load_scratch_assay() -> Tuple[np.ndarray, np.ndarray]:
    """Read the scratch-assay frames as 8-bit RGB images and class maps.

    Returns:
        tuple: ``images`` ``(T, H, W, 3)`` uint8 in RGB order and ``labels``
        ``(T, H, W)`` uint8 with values in ``{0, 1, 2}`` (see module doc).

    Raises:
        ImportError: ``ndev-sampledata`` or ``tifffile`` is missing.
    """
    path = _sample_path()
    try:
        import tifffile
    except ImportError as e:
        raise ImportError(
            f'tifffile is needed to read {SAMPLE_FILE}: {_INSTALL_HINT}'
        ) from e
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, data = series.axes, series.asarray()
    # bring to CTYX whatever order a future release stores
    if sorted(axes) != sorted('CTYX'):
        raise ValueError(f'unexpected axes {axes!r} in {path}')
    data = np.transpose(data, [axes.index(a) for a in 'CTYX'])
    if data.shape[0] != 4:
        raise ValueError(f'expected 4 channels in {path}, got {data.shape}')
    hoechst, oblique, nuclei, cyto = data

    images = np.empty(hoechst.shape + (3, ), np.uint8)
    labels = np.zeros(hoechst.shape, np.uint8)
    for t in range(hoechst.shape[0]):
        nuc8, obl8 = _normalize(hoechst[t]), _normalize(oblique[t])
        images[t] = np.stack([nuc8, obl8, obl8], axis=-1)
        labels[t][cyto[t] > 0] = 1
        labels[t][nuclei[t] > 0] = 2  # nucleus wins over cytoplasm
    return images, labels


def _grid(length: int, size: int) -> List[int]:
    """Offsets of the fewest evenly spaced tiles covering ``length``."""
    n = -(-length // size)
    return [int(round(x)) for x in np.linspace(0, length - size, n)]


def _fit_short_side(image: np.ndarray, label: np.ndarray,
                    size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Upscale so the short side is at least ``size`` (no-op otherwise)."""
    import cv2
    h, w = label.shape
    if min(h, w) >= size:
        return image, label
    scale = size / min(h, w)
    new_wh = (max(size, int(round(w * scale))), max(size,
                                                    int(round(h * scale))))
    image = cv2.resize(image, new_wh, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, new_wh, interpolation=cv2.INTER_NEAREST)
    return image, label


def _split_dirs(root: str) -> List[str]:
    return [
        osp.join(root, kind, split) for kind in ('img_dir', 'ann_dir')
        for split in ('train', 'val')
    ]


def _cache_is_valid(root: str, params: dict) -> bool:
    """Whether ``root/meta.json`` matches ``params`` and all files exist."""
    meta_path = osp.join(root, 'meta.json')
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    if meta.get('params') != params:
        return False
    files: Dict[str, List[str]] = meta.get('files', {})
    if sorted(files) != ['train', 'val']:
        return False
    for split, names in files.items():
        for name in names:
            for kind in ('img_dir', 'ann_dir'):
                if not osp.isfile(osp.join(root, kind, split, name)):
                    return False
    return True


def prepare_scratch_assay(root: str,
                          size: int = 128,
                          val_frames: Sequence[int] = DEFAULT_VAL_FRAMES,
                          force: bool = False) -> str:
    """Write the scratch-assay tiles in MMSeg's layout (cached).

    Writes ``root/img_dir/{train,val}/*.png`` (8-bit, 3 channels),
    ``root/ann_dir/{train,val}/*.png`` (class ids 0/1/2) and
    ``root/meta.json`` (parameters, file lists, per-split class pixel counts
    and the train images' RGB mean/std). Train and val never share a frame.
    The output is deterministic; when ``root/meta.json`` already describes a
    complete dataset built with the same parameters nothing is touched.

    Args:
        root (str): Output folder.
        size (int): Side of the square tiles in pixels. Defaults to 128.
        val_frames (Sequence[int]): Time points (0-9) that go to ``val``;
            the rest go to ``train``. Defaults to ``(3, 7)``.
        force (bool): Rebuild even if a matching cache exists.

    Returns:
        str: ``root``.

    Raises:
        ImportError: ``ndev-sampledata`` or ``tifffile`` is missing.
        ValueError: Invalid ``size`` or ``val_frames``.
    """
    if int(size) != size or size < 8:
        raise ValueError(f'size must be an int >= 8, got {size!r}')
    val = sorted({int(t) for t in val_frames})
    params = dict(
        format_version=FORMAT_VERSION,
        source=SAMPLE_FILE,
        size=int(size),
        val_frames=val)
    if not force and _cache_is_valid(root, params):
        print_log(f'scratch-assay dataset cached in {root}', logger='current')
        return root

    images, labels = load_scratch_assay()
    n_frames = len(images)
    if not val or val[0] < 0 or val[-1] >= n_frames or len(val) >= n_frames:
        raise ValueError(f'val_frames must be a non-empty proper subset of '
                         f'0..{n_frames - 1}, got {list(val_frames)}')

    import cv2

    # drop the marker first so an interrupted rebuild is never "complete",
    # and stale tiles (e.g. another size) so the folders match meta.json
    meta_path = osp.join(root, 'meta.json')
    if osp.exists(meta_path):
        os.remove(meta_path)
    for d in _split_dirs(root):
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.endswith('.png'):
                os.remove(osp.join(d, name))

    files: Dict[str, List[str]] = {'train': [], 'val': []}
    counts = {s: np.zeros(len(CLASSES), np.int64) for s in files}
    pix_sum, pix_sq, n_pix = np.zeros(3), np.zeros(3), 0
    for t in range(n_frames):
        split = 'val' if t in val else 'train'
        image, label = _fit_short_side(images[t], labels[t], size)
        h, w = label.shape
        for y in _grid(h, size):
            for x in _grid(w, size):
                img_tile = image[y:y + size, x:x + size]
                lbl_tile = label[y:y + size, x:x + size]
                name = f't{t:02d}_y{y:03d}_x{x:03d}.png'
                cv2.imwrite(
                    osp.join(root, 'img_dir', split, name),
                    cv2.cvtColor(img_tile, cv2.COLOR_RGB2BGR))
                cv2.imwrite(osp.join(root, 'ann_dir', split, name), lbl_tile)
                files[split].append(name)
                counts[split] += np.bincount(
                    lbl_tile.ravel(), minlength=len(CLASSES))
                if split == 'train':
                    flat = img_tile.reshape(-1, 3).astype(np.float64)
                    pix_sum += flat.sum(0)
                    pix_sq += (flat**2).sum(0)
                    n_pix += len(flat)

    mean = pix_sum / n_pix
    std = np.sqrt(np.maximum(pix_sq / n_pix - mean**2, 0))
    meta = dict(
        params=params,
        source_package=f'ndev-sampledata {_source_version()}',
        license='BSD-3-Clause',
        classes=list(CLASSES),
        frames=dict(
            train=[t for t in range(n_frames) if t not in val], val=val),
        files=files,
        class_pixel_counts={
            s: c.tolist()
            for s, c in counts.items()
        },
        rgb_mean=[round(float(m), 3) for m in mean],
        rgb_std=[round(float(s), 3) for s in std])
    tmp = meta_path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, meta_path)  # the marker appears only once complete
    print_log(
        f'scratch-assay dataset written to {root}: '
        f'{len(files["train"])} train / {len(files["val"])} val tiles of '
        f'{size}x{size}',
        logger='current')
    return root


def read_meta(root: str) -> Optional[dict]:
    """The ``meta.json`` of a prepared dataset, or ``None`` if absent."""
    try:
        with open(osp.join(root, 'meta.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
