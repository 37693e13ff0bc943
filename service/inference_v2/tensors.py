"""The Open Inference Protocol's tensors as they travel: JSON, the binary tensor data extension over HTTP,
and gRPC's typed and raw contents. Each decodes into :class:`Tensor` (a NumPy array with its name) and
each answer is encoded from them, so that the three ways in share one inference path.

The binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes, then each
input that has a ``binary_data_size`` parameter as raw little-endian bytes, in the order of the inputs.
Outputs are answered the same way when the request asks (``binary_data_output``, or an output's
``binary_data``), with each binary output's ``binary_data_size`` in the header.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import orjson

from service.http.errors import InvalidInput
from service.serving.models import holds_boolean

# The protocol's numeric datatypes and their little-endian NumPy types; BYTES is the one that is not numeric.
DATATYPES: dict[str, np.dtype] = {name: np.dtype(t).newbyteorder("<") for name, t in {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.items()}
HEADER_LENGTH = "inference-header-content-length"
ENCODINGS = ("gzip", "deflate")


@dataclass
class Tensor:
    name: str
    datatype: str
    array: np.ndarray
    binary: bool = False  # answer this output as raw bytes

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[Tensor] = field(default_factory=list)  # the outputs asked for (names, binary or not); empty: all
    id: str | None = None
    binary_output: bool = False  # every output as raw bytes, unless it says otherwise


def _datatype(name: str, datatype: object) -> np.dtype:
    if datatype == "BYTES":
        raise InvalidInput(f"input {name!r}: datatype BYTES is not supported; trainserve's models take numbers "
                           f"({', '.join(DATATYPES)})")
    if datatype not in DATATYPES:
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}")
    return DATATYPES[datatype]


MAX_ELEMENTS = 2**31 - 1  # far above any request a body cap lets through; the product is exact (Python ints)


def check_shape(name: str, shape: object) -> list[int]:
    """The shape of an input, over HTTP or gRPC: positive dimensions, and a sane number of elements."""
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                           for d in shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of positive integers, not {shape!r}")
    if prod(shape) > MAX_ELEMENTS:
        raise InvalidInput(f"input {name!r}: shape {shape} has {prod(shape):,} elements, more than any request holds")
    return shape


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    """A tensor from its raw little-endian bytes, which must be exactly what the shape and datatype need."""
    dtype = _datatype(name, datatype)
    expected = prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(f"input {name!r}: {len(raw)} bytes of data, but shape {shape} of {datatype} needs "
                           f"{expected}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def from_values(name: str, datatype: str, shape: list[int], values: object) -> np.ndarray:
    """A tensor from JSON (flat in row-major order, or nested) or gRPC's typed contents."""
    dtype = _datatype(name, datatype)
    try:
        array = np.asarray(values, dtype=dtype).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data must be {datatype} numbers") from None
    if array.size != prod(shape):
        raise InvalidInput(f"input {name!r} has {array.size} values but shape {shape} needs {prod(shape)}")
    return array.reshape(shape)


def _parameters(item: dict, what: str) -> dict:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{what}: parameters must be an object")
    return parameters


def decode_http(body: bytes, headers: Any, max_bytes: int) -> InferRequest:
    """An HTTP infer request: JSON, or a JSON header and binary tensor data; compressed or not."""
    encoding = headers.get("content-encoding", "").lower()
    if encoding:
        body = decompress(body, encoding, max_bytes)
    length = headers.get(HEADER_LENGTH)
    if length is not None:
        if not (length.isascii() and length.isdigit()) or int(length) > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {length!r} must be the JSON header's size in bytes, "
                               f"at most the body's {len(body)}")
        header, binary = body[: int(length)], memoryview(body)[int(length):]
    else:
        header, binary = body, memoryview(b"")
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not valid JSON; a request with binary tensor data needs the "
                           "Inference-Header-Content-Length header") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InvalidInput('the request needs "inputs": a list of tensors')
    may_hold_booleans = b"true" in header or b"false" in header  # walked only then, as on /predict
    inputs, offset = [], 0
    for item in request["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "datatype" not in item:
            raise InvalidInput("each input needs name, shape and datatype, and data or binary_data_size")
        name, shape = item["name"], check_shape(item["name"], item.get("shape"))
        size = _parameters(item, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size {size!r} runs past the {len(binary)} bytes of "
                                   "binary data after the header")
            array = from_raw(name, item["datatype"], shape, bytes(binary[offset : offset + size]))
            offset += size
        elif "data" in item:
            if may_hold_booleans and item["datatype"] != "BOOL" and isinstance(item["data"], list) \
                    and holds_boolean(item["data"]):
                raise InvalidInput(f"input {name!r}: data holds true or false; a {item['datatype']} tensor takes "
                                   "numbers")
            array = from_values(name, item["datatype"], shape, item["data"])
        else:
            raise InvalidInput(f"input {name!r} has neither data nor a binary_data_size parameter")
        inputs.append(Tensor(name, item["datatype"], array))
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data after the header belong to no input")
    parameters = _parameters(request, "the request")
    binary_output = parameters.get("binary_data_output") is True
    outputs = []
    for item in request.get("outputs") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("each requested output needs a name")
        wants = _parameters(item, f"output {item['name']!r}").get("binary_data")
        outputs.append(Tensor(item["name"], "", np.empty(0), binary=binary_output if wants is None else wants is True))
    request_id = request.get("id")
    return InferRequest(inputs, outputs, str(request_id) if request_id is not None else None, binary_output)


def decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """A gzip or deflate (zlib) body, refused when it expands past ``max_bytes``."""
    if encoding not in ENCODINGS:
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none",
                           status_code=415)
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise InvalidInput(f"the body expands past the {max_bytes:,}-byte limit (TRAINSERVE_MAX_REQUEST_BYTES)",
                           status_code=413)
    return out


def encode_http(response: dict, outputs: list[Tensor], accept_encoding: str) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers: JSON, or a JSON header and the binary outputs; compressed when the
    client accepts it."""
    tensors, binary = [], []
    for t in outputs:
        item: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if t.binary:
            raw = np.ascontiguousarray(t.array, dtype=DATATYPES[t.datatype]).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            item["data"] = t.array.reshape(-1).tolist()
        tensors.append(item)
    header = orjson.dumps({**response, "outputs": tensors})
    headers = {"content-type": "application/json"}
    if binary:
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    body = b"".join([header, *binary])
    accepted = [e.split(";")[0].strip().lower() for e in accept_encoding.split(",")]
    encoding = next((e for e in ENCODINGS if e in accepted), None)
    if encoding is not None:
        body = gzip.compress(body, compresslevel=1) if encoding == "gzip" else zlib.compress(body, 1)
        headers["content-encoding"] = encoding
    return body, headers
