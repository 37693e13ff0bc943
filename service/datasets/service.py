"""The dataset catalogue: resolving ``name | name@version | id``, registering uploads, statistics, deletion.

Built-in datasets get their row the first time anything asks for them, so the catalogue needs no seeding
step. An upload is parsed and checked completely before anything is written; its files and canonical form
are stored under their content hash, so identical content is stored once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import dataformats, timeseries
from models.dataformats import ArchiveTooLarge, DataFormatError
from models.datasets import BUILTIN_DATASETS, builtin_missing, from_npz, load_builtin, to_npz
from models.timeseries import TimeSeries
from service.datasets.schemas import DatasetFile, DatasetOut, ParseOptions
from service.http.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, did_you_mean
from service.http.pagination import newest_first
from service.platform.artifacts import ArtifactStore
from service.platform.references import next_version, parse_reference, retry_on_conflict
from service.platform.tables import Dataset, JobStatus, TrainedModel, TrainingJob

log = logging.getLogger(__name__)


class InvalidDataset(InvalidInput):
    code = "invalid_dataset"


MAX_FILES = 4  # IDX with a test part: training images and labels, test images and labels


def _unknown(session: Session, ref: str, name: str) -> str:
    """What to say about a name that names nothing: the closest names, the built-ins, where to look."""
    names = set(BUILTIN_DATASETS) | set(session.scalars(select(Dataset.name).distinct()))
    return (f"unknown dataset {ref!r}; {did_you_mean(name, names)}built-in: {', '.join(sorted(BUILTIN_DATASETS))}; "
            "GET /v1/datasets lists every dataset")


def _builtin_row(session: Session, name: str) -> Dataset:
    row = session.scalar(select(Dataset).where(Dataset.name == name, Dataset.source == "builtin"))
    if row is not None:
        return row
    builtin = BUILTIN_DATASETS[name]
    try:
        with session.begin_nested():
            row = Dataset(name=name, version=1, source="builtin", task=builtin.task, format="builtin",
                          description=builtin.description, files=[])
            session.add(row)
        return row
    except IntegrityError:  # another request registered it first
        return session.scalar(select(Dataset).where(Dataset.name == name, Dataset.source == "builtin"))


def resolve_dataset(session: Session, ref: str, field: str = "dataset") -> Dataset:
    parsed = parse_reference(ref)
    if parsed.id is not None and (row := session.get(Dataset, parsed.id)) is not None:
        return row
    name, version = parsed.name or ref, parsed.version
    if parsed.tag and version is None:
        raise InvalidInput(f"dataset {ref!r}: the part after '@' must be a version number, e.g. {name}@1",
                           details=[{"field": field, "message": "bad version"}])
    query = select(Dataset).where(Dataset.name == name)
    query = query.where(Dataset.version == version) if version is not None else query.order_by(Dataset.version.desc())
    row = session.scalars(query.limit(1)).first()
    if row is None and name in BUILTIN_DATASETS and version in (None, 1):
        row = _builtin_row(session, name)
    if row is None:
        raise InvalidInput(_unknown(session, ref, name),
                           details=[{"field": field, "message": "unknown dataset"}])
    return row


def get_dataset(session: Session, ref: str) -> Dataset:
    try:
        return resolve_dataset(session, ref)
    except InvalidInput as exc:
        raise NotFound(exc.message) from None


def list_datasets(session: Session, limit: int, offset: int) -> tuple[list[Dataset], int]:
    for name in BUILTIN_DATASETS:  # listed like uploads from the first call on
        builtin_stats(session, _builtin_row(session, name))
    session.flush()
    return newest_first(session, select(Dataset), Dataset, limit, offset)


def has_test_set(row: Dataset) -> bool:
    """Whether the dataset came with a test set of its own (MNIST's published digits, an upload's test part)."""
    if row.source == "builtin":
        return BUILTIN_DATASETS[row.name].has_test_set
    return "test" in (row.stats or {})


def dataset_out(row: Dataset) -> DatasetOut:
    missing = builtin_missing(row.name) if row.source == "builtin" else None
    available, hint = missing is None, (f"not installed on this server: {missing}" if missing else None)
    return DatasetOut(id=row.id, name=row.name, version=row.version, ref=f"{row.name}@{row.version}",
                      source=row.source, task=row.task, format=row.format, description=row.description,
                      sha256=row.sha256, size_bytes=row.size_bytes,
                      files=[DatasetFile(name=f["name"], sha256=f["sha256"], size_bytes=f["size_bytes"])
                             for f in row.files or []],
                      source_url=row.source_url, stats=row.stats, has_test_set=has_test_set(row),
                      available=available, hint=hint,
                      created_at=row.created_at)


def builtin_stats(session: Session, row: Dataset) -> None:
    """A built-in's statistics, computed the first time they are asked for and kept."""
    if row.source != "builtin" or row.stats is not None or builtin_missing(row.name):
        return
    row.stats = stats_of(load_builtin(row.name))
    session.flush()


def stats_of(data, classes: list[str] | None = None) -> dict:
    if isinstance(data, TimeSeries):
        return timeseries.timeseries_stats(data)
    return dataformats.image_stats(data, classes)


# -- registering an upload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """Files as received: (file name, bytes)."""

    files: list[tuple[str, bytes]]

    @property
    def sha256(self) -> str:
        """Of the content, whatever order the files came in and whatever they were called."""
        if len(self.files) == 1:
            return hashlib.sha256(self.files[0][1]).hexdigest()
        return _digest_of(self.files)

    def content_sha256(self, options: ParseOptions) -> str:
        """Of the content and, where the files bring a test part, of which files are that part: the same
        bytes with another file as the test set are another dataset, as are the same bytes on a scale the
        uploader named. Without either, ``sha256``."""
        if len(self.files) > 1:
            try:
                fmt = options.format or dataformats.detect_format(self.files)
                train, test = dataformats.split_parts(self.files, fmt, options.test_file_names)
            except DataFormatError:  # refused when parsed, with the same message
                return self.sha256
            if test:
                return _on_scale(hashlib.sha256(f"{_digest_of(train)}:test:{_digest_of(test)}".encode()).hexdigest(),
                                 options)
        return _on_scale(self.sha256, options)


def _on_scale(digest: str, options: ParseOptions) -> str:
    """The same bytes read on a scale the uploader named are another dataset (with another value_range)."""
    return digest if options.value_range is None else hashlib.sha256(f"{digest}:scale:{options.value_range}".encode()
                                                                     ).hexdigest()


def _digest_of(files: list[tuple[str, bytes]]) -> str:
    digests = sorted(hashlib.sha256(data).hexdigest() for _, data in files)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def parse_upload(upload: Upload, options: ParseOptions, max_bytes: int):
    """The dataset the files hold and its format; or InvalidDataset saying what to fix."""
    files = upload.files
    empty = [name for name, data in files if not data]
    if empty:
        raise InvalidDataset(f"{empty[0]}: the file is empty")
    if len(files) > MAX_FILES:
        raise InvalidDataset(f"{len(files)} files; send one file, two for IDX (images and labels), and as many "
                             "again for a test part")
    fmt = options.format or dataformats.detect_format(files)
    classes = None
    try:
        train, test = dataformats.split_parts(files, fmt, options.test_file_names)
        name, data = train[0]
        if fmt == "idx":
            parsed = dataformats.parse_idx(train, max_bytes=max_bytes)
            if test:
                parsed = parsed.with_test(dataformats.parse_idx(test, max_bytes=max_bytes))
        elif fmt == "npz":
            parsed = dataformats.parse_npz(data, name, max_bytes=max_bytes)
        elif fmt == "image_csv":
            shape = tuple(int(v) for v in options.image_shape.split("x")) if options.image_shape else None
            parsed, *tests = (dataformats.parse_image_csv(d, n, label_column=options.label_column, image_shape=shape)
                              for n, d in train + test)
            if tests:
                parsed = parsed.with_test(tests[0])
        elif fmt == "image_zip":
            parsed, classes = dataformats.parse_image_zip(data, name, max_bytes=max_bytes)
        else:
            parsed = timeseries.parse_timeseries_csv(data, name, timestamp_column=options.timestamp_column)
        if options.value_range is not None:
            if isinstance(parsed, TimeSeries):
                raise DataFormatError("value_range is for images; a time series keeps its readings' own units")
            parsed = parsed.on_scale(*(float(v) for v in options.value_range.split(",")))
    except ArchiveTooLarge as exc:  # inflated data is held to the upload's own limit
        raise PayloadTooLarge(f"{exc} (TRAINSERVE_MAX_UPLOAD_BYTES)") from None
    except DataFormatError as exc:
        guessed = "" if options.format else (f" (read as {fmt}, guessed from the file; if it is another format, "
                                             f"name it: format={' | '.join(dataformats.FORMATS)})")
        raise InvalidDataset(f"{exc}{guessed}", details=[{"field": "file", "message": f"not valid {fmt}"}]) from None
    return parsed, fmt, classes


def register_upload(session: Session, store: ArtifactStore, *, name: str, description: str, upload: Upload,
                    options: ParseOptions, max_bytes: int, source: str = "upload",
                    source_url: str | None = None) -> tuple[Dataset, bool]:
    """The dataset row for ``upload`` under ``name``: the existing version when the content is already
    there (``False``), else a new version (``True``). Nothing is written for files that fail the checks."""
    if name in BUILTIN_DATASETS:
        raise Conflict(f"{name!r} is a built-in dataset; upload under another name")
    sha = upload.content_sha256(options)
    existing = session.scalar(select(Dataset).where(Dataset.name == name, Dataset.sha256 == sha))
    if existing is not None:
        return existing, False
    parsed, fmt, classes = parse_upload(upload, options, max_bytes)
    stats = stats_of(parsed, classes)
    prefix = f"datasets/{sha}"
    files = []
    for i, (file_name, data) in enumerate(upload.files):
        key = f"{prefix}/files/{i}"
        files.append({"name": file_name, "key": key, "sha256": store.put(key, data), "size_bytes": len(data)})
    canonical = to_npz(parsed)
    data_key = f"{prefix}/data.npz"
    data_sha = store.put(data_key, canonical)
    task = "forecast" if isinstance(parsed, TimeSeries) else "classification"

    def add_next_version() -> tuple[Dataset, bool]:
        # A concurrent upload of the same content under this name may have registered it meanwhile.
        existing = session.scalar(select(Dataset).where(Dataset.name == name, Dataset.sha256 == sha))
        if existing is not None:
            return existing, False
        row = Dataset(name=name, version=next_version(session, Dataset, name), source=source, task=task,
                      format=fmt, description=description, sha256=sha,
                      size_bytes=sum(len(d) for _, d in upload.files), files=files, data_key=data_key,
                      data_sha256=data_sha, stats=stats, source_url=source_url)
        with session.begin_nested():
            session.add(row)
        return row, True

    return retry_on_conflict(add_next_version, f"dataset {name!r}")


# -- deleting -------------------------------------------------------------------------------------------------


def delete_dataset(session: Session, ref: str) -> list[str]:
    """Delete a version that nothing still needs; finished jobs keep their spec but lose the link.
    Returns the artifact keys to remove once the transaction has committed."""
    row = get_dataset(session, ref)
    label = f"{row.name}@{row.version}"
    if row.source == "builtin":
        raise Conflict(f"{row.name} is a built-in dataset and cannot be deleted")
    # Serialise with job submissions before looking for the jobs that need it: the row lock waits for a
    # submission that holds the row (PostgreSQL), and the write takes SQLite's one write lock (a submission
    # holds it from its insert to its commit). A job submitted after this waits, then finds no dataset.
    session.execute(select(Dataset.id).where(Dataset.id == row.id).with_for_update())
    session.execute(update(TrainingJob).where(TrainingJob.dataset_id == row.id,
                                              TrainingJob.status.not_in([JobStatus.queued, JobStatus.running]))
                    .values(dataset_id=None))
    models = session.execute(select(TrainedModel.name, TrainedModel.version)
                             .where(TrainedModel.dataset_id == row.id).limit(5)).all()
    if models:
        raise Conflict(f"{label} is needed by model(s) trained on it: "
                       f"{', '.join(f'{n}@{v}' for n, v in models)}; delete those models first")
    active = session.scalars(select(TrainingJob.id).where(
        TrainingJob.dataset_id == row.id, TrainingJob.status.in_([JobStatus.queued, JobStatus.running])).limit(5))
    active = [str(j) for j in active]
    if active:
        raise Conflict(f"{label} is needed by queued or running job(s) {', '.join(active)}; cancel them or "
                       "wait for them to finish")
    session.delete(row)
    session.flush()
    shared = session.scalar(select(func.count()).select_from(Dataset).where(Dataset.sha256 == row.sha256))
    log.info("dataset %s deleted", label)
    if shared:  # the same content under another name keeps its files
        return []
    return [f["key"] for f in row.files] + [row.data_key]


def load_dataset(row: Dataset, store: ArtifactStore):
    """What a worker trains on: a built-in's data, or an upload's canonical form, checked against its hash."""
    if row.source == "builtin":
        return load_builtin(row.name)
    return from_npz(store.get(row.data_key, row.data_sha256))


def preview(row: Dataset, store: ArtifactStore, per_class: int, last: int) -> dict:
    """A look at the data: the first ``per_class`` images of each class (pixels, row by row), or the last
    ``last`` readings of a time series (nulls where a reading is missing)."""
    data = load_dataset(row, store)
    if isinstance(data, TimeSeries):
        start = max(0, len(data) - last)
        values = data.values[start:]
        return {"kind": "timeseries", "columns": list(data.columns),
                "timestamps": [str(t) for t in data.timestamps[start:].astype("datetime64[s]")],
                "values": {c: [None if v != v else float(v) for v in values[:, i]] for i, c in enumerate(data.columns)}}
    classes = (row.stats or {}).get("classes") or [str(i) for i in range(data.num_classes)]
    integral = bool((data.x[:1000] == data.x[:1000].round()).all())
    out = []
    for label in range(len(classes)):
        picked = data.x[(data.y == label).nonzero().flatten()[:per_class]]
        images = picked.reshape(len(picked), -1)
        out.append({"label": label, "name": classes[label],
                    "images": images.round().int().tolist() if integral else images.tolist()})
    return {"kind": "images", "shape": list(data.input_shape), "value_range": list(data.value_range), "classes": out}
