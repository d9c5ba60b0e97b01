"""pytest plugin, loaded with ``-p aws_call_recorder`` in a subprocess: records every AWS
operation a boto3 client makes while a frame of the file named by ``AWS_CALLS_INSIDE`` (the
Lambda handler module) is on the stack, as JSON lines in ``AWS_CALLS_OUT``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import botocore.client

_ORIGINAL = botocore.client.BaseClient._make_api_call


def pytest_configure(config: Any) -> None:
    del config
    out = os.environ["AWS_CALLS_OUT"]
    inside = os.path.realpath(os.environ["AWS_CALLS_INSIDE"])

    def recording(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        frame = sys._getframe(1)
        while frame is not None and os.path.realpath(frame.f_code.co_filename) != inside:
            frame = frame.f_back
        if frame is not None:
            record = {
                "service": self.meta.service_model.signing_name,
                "operation": operation_name,
                "params": json.loads(json.dumps(api_params, default=str)),
            }
            with open(out, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
        return _ORIGINAL(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = recording  # type: ignore[method-assign]
