"""OpenAI's error envelope and the simulator's errors, worded as the real service words them.

Every error answer is ``{"error": {"message", "type", "param", "code"}}`` with all four keys
present, so clients can be tested against the exact shapes they meet in production.
"""

from __future__ import annotations

from typing import Any

from batchrun.simulator.limits import go_duration, plain_number

SERVER_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


class ApiError(Exception):
    """An error answer: HTTP status plus the four envelope fields and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON answer in OpenAI's envelope."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def mask_key(key: str) -> str:
    """``sk-abcdef...wxyz`` -> ``sk-ab***yz``: enough to recognise a key, never to use it."""
    # Short strings would be mostly revealed by any prefix/suffix, so show nothing of them.
    return f"{key[:5]}***{key[-2:]}" if len(key) >= 12 else "***"


def body_too_large(limit: int) -> ApiError:
    """413 for a request body larger than the simulator reads."""
    return ApiError(413, f"The request body is too large: at most {limit:,} bytes are accepted.")


def invalid_url(method: str, path: str) -> ApiError:
    """404 for a route the service does not have."""
    return ApiError(404, f"Invalid URL ({method} {path})")


def missing_key() -> ApiError:
    """401 when no bearer key came with the request."""
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    )


def wrong_key(key: str) -> ApiError:
    """401 for a key other than the configured one; the key is masked."""
    return ApiError(
        401,
        f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def invalid_beta() -> ApiError:
    """400 when the ``OpenAI-Beta`` header is missing or names no Assistants version."""
    return ApiError(
        400,
        "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please try "
        "again by setting the header 'OpenAI-Beta: assistants=v2'.",
        code="invalid_beta",
    )


def invalid_json() -> ApiError:
    """400 for a body that is not JSON."""
    return ApiError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you "
        "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
        "but what was sent was not valid JSON.)",
    )


def not_an_object(kind: str) -> ApiError:
    """400 for a JSON body that is not an object."""
    return ApiError(400, f"Invalid type for 'body': expected an object, but got {kind} instead.")


def invalid_param(param: str, message: str, code: str | None = None) -> ApiError:
    """400 naming the parameter at fault."""
    return ApiError(400, message, param=param, code=code)


def invalid_body(param: str, problem: str, code: str | None) -> ApiError:
    """400 for a body the schema refuses, worded and coded as OpenAI answers it."""
    if code == "missing_required_parameter":
        message = f"Missing required parameter: '{param}'."
    elif code == "unknown_parameter":
        message = f"Unknown parameter: '{param}'."
    else:
        message = f"Invalid '{param}': {problem}."
    return ApiError(400, message, param=param, code=code or "invalid_value")


def no_thread(thread_id: str) -> ApiError:
    """404 for a thread the service does not know."""
    return ApiError(404, f"No thread found with id '{thread_id}'.")


def no_run(run_id: str) -> ApiError:
    """404 for a run the thread does not have."""
    return ApiError(404, f"No run found with id '{run_id}'.")


def busy_thread(thread_id: str, run_id: str) -> ApiError:
    """400 for a second run on a thread whose run is still active."""
    return ApiError(400, f"Thread {thread_id} already has an active run {run_id}.")


def cannot_cancel(status: str) -> ApiError:
    """400 for cancelling a run that already stopped."""
    return ApiError(400, f"Cannot cancel run with status '{status}'.")


def conversation_locked() -> ApiError:
    """400 for a request on a conversation another request is still working on."""
    return ApiError(
        400,
        "Another process is currently operating on this conversation. Please retry in a few "
        "seconds.",
        param="conversation",
        code="conversation_locked",
    )


def no_conversation(conversation_id: str) -> ApiError:
    """404 for a conversation the service does not know."""
    return ApiError(404, f"Conversation with id '{conversation_id}' not found.")


def no_response(response_id: str) -> ApiError:
    """404 for a response the service does not have (or did not store)."""
    return ApiError(404, f"Response with id '{response_id}' not found.")


def previous_response_not_found(response_id: str) -> ApiError:
    """400 for a ``previous_response_id`` the service does not have."""
    return ApiError(
        400,
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def conversation_and_previous_response() -> ApiError:
    """400 for a request naming both a conversation and a previous response."""
    return ApiError(
        400,
        "Mutually exclusive parameters: Ensure you are only providing one of: "
        "'previous_response_id' or 'conversation'.",
        code="mutually_exclusive_parameters",
    )


def cannot_cancel_synchronous() -> ApiError:
    """400 for cancelling a response that was not created with ``background: true``."""
    return ApiError(400, "Cannot cancel a synchronous response.")


def no_chat_completion(completion_id: str) -> ApiError:
    """404 for a chat completion the service did not store."""
    return ApiError(404, f"Chat completion with id '{completion_id}' not found.")


def unsupported_value(param: str, value: str, supported: tuple[str, ...]) -> ApiError:
    """400 for a value outside a parameter's enum, listing the ones it takes."""
    quoted = [f"'{choice}'" for choice in supported]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])}, and {quoted[-1]}"
    return ApiError(
        400,
        f"Invalid value: '{value}'. Supported values are: {listed}.",
        param=param,
        code="invalid_value",
    )


def not_multipart(content_type: str) -> ApiError:
    """400 for an upload that is not ``multipart/form-data``."""
    return ApiError(
        400,
        f"Invalid Content-Type header ({content_type or 'none'}), expected multipart/form-data.",
        code="invalid_content_type",
    )


def file_too_large(limit: int) -> ApiError:
    """400 for an upload larger than the service takes."""
    return ApiError(
        400,
        f"File is too large: the maximum size is {limit // 1024**2} MB.",
        param="file",
        code="file_too_large",
    )


def no_file(file_id: str, param: str = "id") -> ApiError:
    """404 for a file the service does not have."""
    return ApiError(404, f"No such File object: {file_id}", param=param)


def wrong_purpose(file_id: str, purpose: str) -> ApiError:
    """400 for a batch whose input file was not uploaded with purpose ``batch``."""
    return ApiError(
        400,
        f"Invalid 'input_file_id': {file_id} was uploaded with purpose '{purpose}'; a batch "
        "needs a file uploaded with purpose 'batch'.",
        param="input_file_id",
        code="invalid_value",
    )


def no_batch(batch_id: str) -> ApiError:
    """404 for a batch the service does not have."""
    return ApiError(404, f"No batch found with id '{batch_id}'.")


def cannot_cancel_batch(status: str) -> ApiError:
    """400 for cancelling a batch that already ended."""
    return ApiError(400, f"Cannot cancel a batch with status '{status}'.")


def rate_limited(limit: float, wait_seconds: float, headers: dict[str, str]) -> ApiError:
    """429 from an empty token bucket, with ``retry-after`` and ``retry-after-ms``."""
    retry_ms = max(1, int(wait_seconds * 1000 + 0.999))
    retry_s = max(1, -(-retry_ms // 1000))  # whole seconds, rounded up, at least 1
    shown = plain_number(limit)
    return ApiError(
        429,
        f"Rate limit reached for requests per min (RPM): Limit {shown}, Used {shown}, "
        f"Requested 1. Please try again in {go_duration(wait_seconds)}. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        error_type="requests",
        code="rate_limit_exceeded",
        headers={**headers, "retry-after": str(retry_s), "retry-after-ms": str(retry_ms)},
    )


def tokens_rate_limited(
    limit: float, used: float, requested: int, wait_seconds: float, model: str
) -> ApiError:
    """429 from an empty --tpm bucket, worded as OpenAI words it, naming its budget
    (``type: "tokens"``) and its wait (in the message and the retry headers)."""
    retry_ms = max(1, int(wait_seconds * 1000 + 0.999))
    retry_s = max(1, -(-retry_ms // 1000))
    return ApiError(
        429,
        f"Rate limit reached for {model} in organization org-simulated on tokens per min "
        f"(TPM): Limit {plain_number(limit)}, Used {max(0, int(used))}, Requested {requested}. "
        f"Please try again in {go_duration(wait_seconds)}. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        error_type="tokens",
        code="rate_limit_exceeded",
        headers={"retry-after": str(retry_s), "retry-after-ms": str(retry_ms)},
    )


def request_too_large(limit: float, requested: int, model: str) -> ApiError:
    """429 for a request charged more tokens than the --tpm limit allows in a minute: it
    can never pass (OpenAI's wording; no retry headers)."""
    return ApiError(
        429,
        f"Request too large for {model} in organization org-simulated on tokens per min "
        f"(TPM): Limit {plain_number(limit)}, Requested {requested}. The input or output "
        "tokens must be reduced in order to run successfully. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        error_type="tokens",
        code="rate_limit_exceeded",
    )


def quota_exhausted() -> ApiError:
    """429 that no retry can cure: the account has no quota left."""
    return ApiError(
        429,
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        error_type="insufficient_quota",
        code="insufficient_quota",
    )


def server_error(status: int) -> ApiError:
    """An injected 500, 502 or 503."""
    return ApiError(status, SERVER_ERROR_MESSAGES[status], error_type="server_error")
