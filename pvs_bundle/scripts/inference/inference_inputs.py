"""The inputs of inference: list them, check them all before any inference, name their outputs.

Three ways to give inputs (``input_files``, when not empty, takes precedence over ``dataset_dir``):

- a BIDS dataset: the images of the contrasts the model accepts, ``sub-*/[ses-*/]anat/*_<contrast>.nii[.gz]``
  (:func:`scripts.bids.find_images`); outputs mirror ``sub-*/[ses-*/]anat/`` under ``output_dir``;
- a folder of NIfTI files (``*.nii``, ``*.nii.gz`` directly in it; other files are ignored with a warning);
- an explicit list of NIfTI files.

Outputs of folder and list inputs go straight into ``output_dir``. Each is named as a BIDS derivative of its
input, less its contrast: ``sub-001_T2w.nii.gz`` (or ``sub-001_T1w.nii.gz``) gives ``sub-001_desc-pvs_mask.nii.gz``
(and ``sub-001_desc-pvs_probseg.nii.gz``); any other name keeps its stem (``case7.nii`` gives
``case7_desc-pvs_mask.nii.gz``). Two inputs that would give one output name (two contrasts of one case) are refused.

Inputs are checked for what they are. The contrasts a model accepts (``contrasts``: BIDS suffixes, those stored in
its ``model.json`` for ``"auto"``, else T2w; :func:`scripts.model.model_file.resolve_contrasts`) are the ones a BIDS
dataset is searched for, and a file whose name gives another BIDS suffix (``sub-101_T1w.nii.gz`` for a T2w model,
``_FLAIR``, a derivative such as ``_desc-mask_PVS``) is refused, with the other problems, unless
``allow_any_contrast`` is true; then a BIDS dataset gives every anatomical image (:data:`ANAT_CONTRASTS`). A name
that states no contrast (``case7.nii``) is segmented as the model's contrasts, with a warning naming it. Each output
row carries the input's BIDS entities (``subject`` ``sub-101``, ``session``, ``acq``, ``run``; empty when absent),
the contrast its name states (``contrast``, e.g. ``T1w``; empty when none) and its file name.

Every input is checked up front and every problem is reported at once, naming the file: non-NIfTI or
unreadable files, truncated or corrupt voxel data, images that are not 3D (a 4D image needs ``volume_index`` to
pick one volume), and NaN/Inf intensities. The check reads each image's voxels once more than inference does
(about half a second for a 208 x 300 x 320 .nii.gz, against minutes of CPU inference), so that no bad file
fails deep inside a data-loader worker.
``volume_index`` applies to 4D images only; 3D images (and 4D ones with a single volume) are segmented as they are.
Volumes smaller than the sliding window are accepted: the sliding-window inferer zero-pads them to the window
and crops the padding off its output. Existing outputs are never overwritten unless ``overwrite`` is true.

``skip_existing`` resumes a cohort run that stopped: inputs whose outputs are complete and valid (their sidecar
records this run's model and settings, their mask is readable on the input's grid:
:meth:`scripts.inference.derivatives.Provenance.completed_row`) are kept with their recorded PVS burden row, the
others (never done, damaged, partial) are segmented, and the tables are written again for every input.
Under torchrun every rank checks its own share of the inputs and all ranks see every rank's findings.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from scripts.bids import (
    ANAT_CONTRASTS,
    DEFAULT_CONTRASTS,
    as_contrasts,
    contrast_names,
    find_images,
    image_pattern,
    name_suffix,
    named_contrast,
    parse_entities,
    strip_nifti_suffix,
)
from scripts.distributed import barrier, gather_in_order, input_shard
from scripts.inference.derivatives import Provenance
from scripts.inference.shards import Shard, has_record
from scripts.model.model_file import trained_for
from scripts.nifti import DATA_ERRORS, HEADER_ERRORS, count_non_finite
from scripts.settings import as_bool, as_volume_index

logger = logging.getLogger("pvs_bundle.inference_inputs")

MASK_SUFFIX = "_desc-pvs_mask.nii.gz"
PROBSEG_SUFFIX = "_desc-pvs_probseg.nii.gz"
DONE_KEY = "recorded_row"  # the PVS burden row of an input whose outputs are complete (skip_existing)
ENTITY_COLUMNS: tuple[tuple[str, str], ...] = (("subject", "sub"), ("session", "ses"), ("acq", "acq"), ("run", "run"))
CONTRAST_COLUMN = "contrast"


def list_inputs(
    dataset_dir: str | Path,
    input_files: Sequence[str] | str = (),
    contrasts: Sequence[str] = DEFAULT_CONTRASTS,
    allow_any_contrast: bool = False,
    model_file: str | Path | None = None,
) -> list[tuple[Path, Path]]:
    """List the images to segment, each with the folder (relative to ``output_dir``) its outputs go to.

    Args:
        dataset_dir: a BIDS dataset or a folder of NIfTI files (ignored when ``input_files`` is given).
        input_files: an explicit list of files (a single path is accepted too).
        contrasts: the contrasts (BIDS suffixes) the model accepts, the images a BIDS dataset is searched for.
        allow_any_contrast: whether a BIDS dataset gives every anatomical image, whatever its contrast.
        model_file: the model, named when a BIDS dataset holds images of other contrasts only.

    Returns:
        (image, output sub-folder) pairs, in a stable order.

    Raises:
        FileNotFoundError: when a listed file or the folder does not exist, or the folder holds no image.
        ValueError: when a BIDS dataset holds anatomical images of other contrasts only (and ``allow_any_contrast``
            is false), naming one of them and the fix.
    """
    files = [input_files] if isinstance(input_files, str) else list(input_files or ())
    if files:
        missing = [f for f in files if not Path(f).expanduser().is_file()]
        if missing:
            raise FileNotFoundError(f"input_files must exist, not {missing} (no such file).")
        return [(Path(f).expanduser(), Path()) for f in files]
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"input_dir {root} does not exist: pass --input_dir with a BIDS dataset or a folder of .nii/.nii.gz "
            "files, or --input_files \"['a.nii.gz','b.nii.gz']\"."
        )
    contrasts = as_contrasts(contrasts)
    bids_images = find_images(root, ANAT_CONTRASTS if allow_any_contrast else contrasts)
    others = [] if allow_any_contrast else sorted(set(find_images(root, ANAT_CONTRASTS)) - set(bids_images))
    if others:
        counts = Counter(name_suffix(f.name) for f in others)
        found = ", ".join(f"{n} {suffix}" for suffix, n in counts.most_common())
        if not bids_images:
            raise ValueError(
                f"input_dir {root} holds no {contrast_names(contrasts)} image ({image_pattern(contrasts)}), only "
                f"images of other contrasts ({found}) such as {others[0]}: {trained_for(contrasts, model_file)}; "
                "pass --allow_any_contrast true to segment them anyway."
            )
        logger.warning(
            "Not segmenting %d image(s) of %s of other contrasts (%s): %s; --allow_any_contrast true segments them.",
            len(others),
            root,
            found,
            trained_for(contrasts, model_file),
        )
    if bids_images:
        return [(image, image.parent.relative_to(root)) for image in bids_images]
    entries = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in entries if strip_nifti_suffix(p.name) is not None]
    ignored = [p.name for p in entries if strip_nifti_suffix(p.name) is None]
    if ignored:
        logger.warning("Ignoring %d file(s) of %s that are not NIfTI: %s", len(ignored), root, ", ".join(ignored))
    if not images:
        raise FileNotFoundError(
            f"input_dir {root} holds no image: looked for {contrast_names(contrasts)} images "
            f"{image_pattern(contrasts)} (BIDS) and for *.nii / *.nii.gz files directly in the folder."
        )
    return [(image, Path()) for image in images]


def output_stem(image: Path) -> str:
    """Return the stem outputs are named after: the file name less ``.nii[.gz]`` and its contrast (``_T2w``, ``_T1w``).

    Only an anatomical image contrast (:data:`ANAT_CONTRASTS`) is taken off; another suffix (``_mask``) stays.

    Raises:
        ValueError: if the file is not NIfTI.
    """
    stem = strip_nifti_suffix(image.name)
    if stem is None:
        raise ValueError(f"{image}: must be a NIfTI file (.nii or .nii.gz), not {image.name!r}.")
    contrast = named_contrast(image)
    return stem.removesuffix(f"_{contrast}") if contrast in ANAT_CONTRASTS else stem


def check_image(path: Path, volume_index: int | None = None) -> str | None:
    """Check that one input can be segmented; return what is wrong with it, or None.

    Args:
        path: the image file.
        volume_index: the volume to segment in a 4D image (None: the image must be 3D).

    Returns:
        A sentence naming the problem and its fix, or None when the image is fine.
    """
    if strip_nifti_suffix(path.name) is None:
        return f"must be a NIfTI file (.nii or .nii.gz), not {''.join(path.suffixes) or 'a file without extension'}."
    try:
        image = nib.load(str(path))
        shape = tuple(int(s) for s in image.shape)
    except HEADER_ERRORS as err:
        return f"cannot be read as NIfTI ({type(err).__name__}: {err})."
    volumes = shape[3] if len(shape) == 4 else 1
    if len(shape) not in (3, 4):
        return f"must be a 3D image (or 4D with --volume_index), not of shape {shape}."
    if volumes > 1 and volume_index is None:
        return (
            f"must be a 3D image, not 4D of shape {shape}: pass --volume_index N (0 <= N < {volumes}) to "
            "segment one of its volumes."
        )
    if volumes > 1 and volume_index >= volumes:
        return f"volume_index must be below the number of volumes {volumes} (shape {shape}), not {volume_index}."
    try:
        data = np.asanyarray(
            image.dataobj[..., volume_index if volumes > 1 else 0] if len(shape) == 4 else image.dataobj
        )
    except DATA_ERRORS as err:
        return (
            f"has a readable header but its voxel data cannot be read ({type(err).__name__}: {err}); "
            "copy or convert the file again."
        )
    bad = count_non_finite(data)
    if bad:
        return f"must hold finite intensities, not {bad} NaN/Inf voxel(s); replace them (e.g. np.nan_to_num)."
    return None


def check_contrast(
    path: Path, contrasts: Sequence[str] = DEFAULT_CONTRASTS, model_file: str | Path | None = None
) -> str | None:
    """Return why an input is not of a contrast the model accepts by its name, or None when it is or does not say.

    Args:
        path: the input.
        contrasts: the contrasts (BIDS suffixes) the model accepts.
        model_file: the model, named in the message.
    """
    contrast = named_contrast(path)
    if contrast is None or contrast in contrasts:
        return None
    return (
        f"is a {contrast} image by its name, but {trained_for(contrasts, model_file)}: pass --allow_any_contrast "
        "true to segment it anyway."
    )


def entity_columns(image: Path) -> dict[str, str]:
    """Return the table columns that identify an input: its BIDS entities, contrast and file name.

    ``subject`` is ``sub-<label>`` for a BIDS name and the output stem for any other; ``session``, ``acq`` and
    ``run`` are ``ses-<label>`` … or empty; ``contrast`` is the suffix the name states (``T2w``, ``T1w``,
    ``FLAIR`` …; :func:`scripts.bids.named_contrast`), or empty when it states none.
    """
    try:
        entities, _ = parse_entities(image)
    except ValueError:
        entities = {"sub": None}
    row = {column: f"{key}-{entities[key]}" if entities.get(key) else "" for column, key in ENTITY_COLUMNS}
    row = {**row, "subject": row["subject"] or output_stem(image)}
    return {**row, CONTRAST_COLUMN: named_contrast(image) or "", "image": image.name}


def check_inputs(
    images: Sequence[Path],
    volume_index: int | None = None,
    allow_any_contrast: bool = False,
    contrasts: Sequence[str] = DEFAULT_CONTRASTS,
    model_file: str | Path | None = None,
) -> None:
    """Check every input before any inference and report all the problems at once.

    Under torchrun each rank checks its share of the inputs, and every rank raises the same error.

    Args:
        images: the inputs.
        volume_index: the volume to segment in 4D images (None: every image must be 3D).
        allow_any_contrast: whether inputs whose names state another contrast than ``contrasts`` are segmented.
        contrasts: the contrasts (BIDS suffixes) the model accepts.
        model_file: the model, named when an input's contrast is refused.

    Raises:
        ValueError: listing each bad file with its problem.
    """
    checked = input_shard(images)
    mine = [
        (None if allow_any_contrast else check_contrast(image, contrasts, model_file))
        or check_image(image, volume_index)
        for image in checked
    ]
    problems = gather_in_order(mine, len(images))
    bad = [f"  {image}: {problem}" for image, problem in zip(images, problems, strict=True) if problem is not None]
    if bad:
        raise ValueError(f"{len(bad)} of {len(images)} input(s) cannot be segmented:\n" + "\n".join(bad))


def check_overwrite(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse to replace existing outputs unless ``overwrite`` is true.

    Raises:
        FileExistsError: naming the existing files and the fix.
    """
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise FileExistsError(
            f"{len(existing)} output file(s) already exist and would be overwritten: {shown}. "
            "Pass --skip_existing true to keep the complete ones and segment only the rest (to resume a run that "
            "stopped), --overwrite true to replace them all, or choose another --output_dir."
        )


def inference_datalist(
    dataset_dir: str | Path,
    output_dir: str | Path,
    input_files: Sequence[str] | str = (),
    volume_index: int | str | None = None,
    save_probabilities: bool | str = False,
    overwrite: bool | str = False,
    other_outputs: Sequence[str | Path] = (),
    skip_existing: bool | str = False,
    provenance: Provenance | None = None,
    allow_any_contrast: bool | str = False,
    contrasts: Sequence[str] = DEFAULT_CONTRASTS,
    model_file: str | Path | None = None,
    shard: Shard | None = None,
) -> list[dict[str, Any]]:
    """List, check and name the inputs of an inference run, before any of them is loaded for inference.

    Args:
        dataset_dir: a BIDS dataset or a folder of NIfTI files.
        output_dir: where the outputs go.
        input_files: an explicit list of NIfTI files; when not empty, ``dataset_dir`` is not used.
        volume_index: the volume to segment in 4D images (null: every image must be 3D).
        save_probabilities: whether probability maps are written too (they are then guarded against overwrite).
        overwrite: whether existing outputs may be replaced.
        other_outputs: further files the run writes (the volume table), guarded like the masks.
        skip_existing: whether to keep the inputs whose outputs are complete and valid (see ``provenance``) and
            segment only the others, replacing whatever partial outputs they have.
        provenance: what checks an input's outputs and reads its recorded row (needed by ``skip_existing``).
        allow_any_contrast: whether to segment inputs whose names give a contrast not in ``contrasts`` (a BIDS
            dataset then gives every anatomical image).
        contrasts: the contrasts (BIDS suffixes) the model accepts (``@resolved_contrasts``).
        model_file: the model, named when an input's contrast is refused.
        shard: a job of a job array (:mod:`scripts.inference.shards`): only its share of the inputs is checked and
            returned, its part of the tables guarded instead of ``other_outputs``; None: every input.

    Returns:
        One dict per input: ``image`` (the path), ``case`` (the output stem), ``mask`` and ``probseg`` (their
        output paths), and ``row`` (:func:`entity_columns`); with ``skip_existing``, inputs already done also hold
        their recorded row under :data:`DONE_KEY` (:func:`pending` lists the others).

    Raises:
        FileNotFoundError: when the inputs cannot be found.
        ValueError: listing every input that cannot be segmented, or when two inputs share an output name, or a
            BIDS dataset holds images of other contrasts only.
        FileExistsError: when outputs exist and neither ``overwrite`` nor ``skip_existing`` is true.
    """
    index = as_volume_index(volume_index)
    skip = as_bool(skip_existing, "skip_existing")
    with_probabilities = as_bool(save_probabilities, "save_probabilities")
    if skip and provenance is None:
        raise ValueError("skip_existing needs the run's provenance (the inference config's @provenance), not None.")
    any_contrast = as_bool(allow_any_contrast, "allow_any_contrast")
    contrasts = as_contrasts(contrasts)
    inputs = list_inputs(dataset_dir, input_files, contrasts, any_contrast, model_file)
    share = [image for i, (image, _) in enumerate(inputs) if shard is None or shard.takes(i)]
    check_inputs(share, index, any_contrast, contrasts, model_file)
    unstated = [image.name for image, _ in inputs if named_contrast(image) is None]
    if unstated and not any_contrast:
        logger.warning(
            "%d input name(s) do not state a contrast (%s): segmenting them as %s images.",
            len(unstated),
            ", ".join(unstated[:5]) + (" ..." if len(unstated) > 5 else ""),
            contrast_names(contrasts),
        )
    out = Path(output_dir).expanduser()
    items = []
    for image, folder in inputs:
        stem = output_stem(image)
        items.append(
            {
                "image": str(image),
                "case": stem,
                "mask": str(out / folder / f"{stem}{MASK_SUFFIX}"),
                "probseg": str(out / folder / f"{stem}{PROBSEG_SUFFIX}"),
                "row": entity_columns(image),
            }
        )
    seen: dict[str, str] = {}
    for item in items:
        if item["mask"] in seen:
            raise ValueError(
                f"inputs {seen[item['mask']]} and {item['image']} must have different names, not both give "
                f"{item['mask']}: {_rename_fix(Path(seen[item['mask']]), Path(item['image']))}."
            )
        seen[item["mask"]] = item["image"]
    if shard is not None:
        items, other_outputs = shard.deal(items), [shard.manifest(out)]
    if skip:
        mine = [
            provenance.completed_row(i["image"], [i["mask"], *([i["probseg"]] if with_probabilities else [])])
            if shard is None or has_record(shard, out, i["case"])
            else None
            for i in input_shard(items)
        ]
        for item, row in zip(items, gather_in_order(mine, len(items)), strict=True):
            if row is not None:
                item[DONE_KEY] = {**row, **item["row"]}  # identity columns as this version names them
        done = sum(DONE_KEY in item for item in items)
        logger.info("Skipping %d of %d image(s) whose outputs are complete (--skip_existing).", done, len(items))
    else:
        guarded = [Path(i["mask"]) for i in items] + [Path(p) for p in other_outputs]
        if with_probabilities:
            guarded += [Path(i["probseg"]) for i in items]
        check_overwrite(guarded, as_bool(overwrite, "overwrite"))
        barrier()  # every rank has looked for existing outputs before any rank writes one
    source = (
        f"{len(input_files if not isinstance(input_files, str) else [input_files])} listed file(s)"
        if input_files
        else str(Path(dataset_dir).expanduser())
    )
    logger.info("Segmenting %d image(s) from %s into %s.", len(pending(items)), source, out)
    return items


def _rename_fix(first: Path, second: Path) -> str:
    """How to segment two inputs that give one output name: two contrasts of one scan, or two files named alike."""
    contrasts = (named_contrast(first), named_contrast(second))
    if None in contrasts or contrasts[0] == contrasts[1]:
        return "rename one, or segment them into different --output_dir"
    return (
        f"they are {contrasts[0]} and {contrasts[1]} images of one case: segment one contrast a run "
        f"(--contrasts {contrasts[0]}, then --contrasts {contrasts[1]}, without --allow_any_contrast), each into "
        "its own --output_dir"
    )


def pending(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inputs of :func:`inference_datalist` still to segment (all of them unless ``skip_existing``)."""
    return [item for item in items if DONE_KEY not in item]
