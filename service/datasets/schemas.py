"""What the datasets API takes and answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, HttpUrl

from models.dataformats import FORMATS

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
Format = Literal[FORMATS]  # type: ignore[valid-type]


class DatasetRef(BaseModel):
    id: uuid.UUID
    name: str
    version: int


class ParseOptions(BaseModel):
    """How to read the files; every field is optional and guessed when left out."""

    format: Format | None = Field(None, description="idx, npz, image_csv, image_zip or timeseries_csv; guessed "
                                                    "from the file names and contents when left out")
    label_column: str | None = Field(None, description="image_csv: the label column (default: label, class, "
                                                       "target or y)")
    image_shape: str | None = Field(None, pattern=r"^\d+x\d+$", description="image_csv: HEIGHTxWIDTH when the "
                                                                           "images are not square, e.g. 20x30")
    value_range: str | None = Field(None, pattern=r"^-?\d+(\.\d+)?,-?\d+(\.\d+)?$",
                                    description="images: the pixels' scale as LOW,HIGH (e.g. 0,16 or 0,255 or 0,1), "
                                                "instead of the one detected (stats.value_range_rule says how)")
    timestamp_column: str | None = Field(None, description="timeseries_csv: the timestamp column (default: "
                                                           "time, timestamp, datetime, date or ds)")
    test_files: str | None = Field(None, max_length=1000, description="idx, image_csv: the names of the uploaded "
                                   "files that hold the test part, comma-separated (default: the files whose names "
                                   "say test or t10k, such as t10k-images-idx3-ubyte.gz or mnist_test.csv)")

    @property
    def test_file_names(self) -> list[str] | None:
        return None if self.test_files is None else [n.strip() for n in self.test_files.split(",") if n.strip()]


class UploadForm(ParseOptions):
    """The form fields of an upload, beside its files."""

    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits, '.', '_' and '-'")
    description: str = Field("", max_length=2000)


class DatasetImport(UploadForm):
    """Import a dataset from an http(s) URL; MNIST-style IDX data needs both files' URLs."""

    url: HttpUrl
    labels_url: HttpUrl | None = Field(None, description="idx: the labels file, when url is the images file")
    test_url: HttpUrl | None = Field(None, description="the test part: idx: its images file; image_csv: its CSV")
    test_labels_url: HttpUrl | None = Field(None, description="idx: the test part's labels file")


class DatasetFile(BaseModel):
    name: str
    sha256: str
    size_bytes: int


class DatasetOut(BaseModel):
    id: uuid.UUID
    name: str
    version: int
    ref: str = Field(description="name@version: how a job names exactly this version")
    source: str
    task: str
    format: str | None
    description: str
    sha256: str | None
    size_bytes: int | None
    files: list[DatasetFile]
    source_url: str | None
    stats: dict[str, Any] | None = Field(description="samples, shape, class histogram, pixel mean/std (of the "
                                                     "training part; under `test`, of the dataset's own test set); "
                                                     "for time series first/last timestamp, frequency, gaps, "
                                                     "per-column min/max/mean")
    has_test_set: bool = Field(False, description="the dataset came with its own test set: jobs are tested on it, "
                                                  "and training.test_split 0 is allowed")
    available: bool = Field(True, description="false for a built-in whose data is not installed here")
    hint: str | None = None
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    total: int
    limit: int
    offset: int
