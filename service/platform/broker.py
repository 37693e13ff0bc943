"""The embedded broker: kombu's filesystem transport, with atomic writes and folders made on first use.

The stock transport creates a message file under its final name and only then writes it, so a worker
polling the folder can pick the file up empty and die on a JSON error. Writing to a temporary name and
renaming it into place (atomic on one filesystem) means a reader only ever sees whole messages.

The stock transport also needs its folders to exist before it starts; this one makes them when a channel
opens, so that nothing is written to disk until a process really talks to the broker.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from time import monotonic

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "trainserve-filesystem"


class AtomicFilesystemChannel(filesystem.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for folder in (self.data_folder_in, self.data_folder_out, self.control_folder):
            os.makedirs(folder, exist_ok=True)

    def _put(self, queue, payload, **kwargs):
        # Same name pattern as the stock transport: readers sort on the millisecond prefix.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        # A leading dot keeps the half-written file from matching "<queue>.msg" while it is written.
        fd, tmp = tempfile.mkstemp(dir=self.data_folder_out, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, os.path.join(self.data_folder_out, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicFilesystemChannel


TRANSPORT_ALIASES[SCHEME] = "service.platform.broker:AtomicFilesystemTransport"
