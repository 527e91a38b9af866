"""The worker's wire format, shared by the server and the client: OpenAI-shaped requests and
responses, server-sent events, and our extensions.

Tool calls (``tools``, ``tool_choice``, ``parallel_tool_calls``) are validated here into a
:class:`ToolPlan`; the template renders the tools (``engine._toolprompt``) and
:mod:`.toolcalls` parses the calls out of the reply.

Extensions to the OpenAI shapes (ignored by OpenAI clients): requests may carry ``top_k``,
``min_p``, ``repeat_penalty``, ``repeat_last_n`` and ``ignore_eos`` (as ``llama-server``
accepts them); the last chunk of a stream and a whole response carry ``"llcuda": {"record":
RunRecord}``. A stream sends one event per generated token (its text may be empty mid UTF-8
sequence or while a stop string is being matched) and a comment line (``: ping``) every
:data:`HEARTBEAT_S` seconds while nothing else is sent, so a client notices a dead worker fast.

One package, four parts: what both sides share (:mod:`._common`), the server's parsing of
requests (:mod:`._requests`) and shaping of replies (:mod:`._responses`), and the client's
building of requests and reading of replies (:mod:`._client`). The round-trip tests
(tests/core/worker) check each side's fields against the other's.
"""

from __future__ import annotations

from llcuda_tui.core.worker.protocol._client import event_text as event_text
from llcuda_tui.core.worker.protocol._client import iter_events as iter_events
from llcuda_tui.core.worker.protocol._client import record_from_dict as record_from_dict
from llcuda_tui.core.worker.protocol._client import request_payload as request_payload
from llcuda_tui.core.worker.protocol._common import CHAT_PATH as CHAT_PATH
from llcuda_tui.core.worker.protocol._common import COMPLETIONS_PATH as COMPLETIONS_PATH
from llcuda_tui.core.worker.protocol._common import DONE as DONE
from llcuda_tui.core.worker.protocol._common import ERROR_CODES as ERROR_CODES
from llcuda_tui.core.worker.protocol._common import ERROR_TYPES as ERROR_TYPES
from llcuda_tui.core.worker.protocol._common import EXT_PREFIX as EXT_PREFIX
from llcuda_tui.core.worker.protocol._common import FINISH_REASONS as FINISH_REASONS
from llcuda_tui.core.worker.protocol._common import HEARTBEAT as HEARTBEAT
from llcuda_tui.core.worker.protocol._common import HEARTBEAT_S as HEARTBEAT_S
from llcuda_tui.core.worker.protocol._common import LOADING_HEARTBEAT as LOADING_HEARTBEAT
from llcuda_tui.core.worker.protocol._common import MAX_CHOICES as MAX_CHOICES
from llcuda_tui.core.worker.protocol._common import MAX_GRAMMAR_CHARS as MAX_GRAMMAR_CHARS
from llcuda_tui.core.worker.protocol._common import MAX_MESSAGES as MAX_MESSAGES
from llcuda_tui.core.worker.protocol._common import MAX_N as MAX_N
from llcuda_tui.core.worker.protocol._common import MAX_STOP_CHARS as MAX_STOP_CHARS
from llcuda_tui.core.worker.protocol._common import MAX_STOP_STRINGS as MAX_STOP_STRINGS
from llcuda_tui.core.worker.protocol._common import MAX_TOOLS as MAX_TOOLS
from llcuda_tui.core.worker.protocol._common import SAMPLING_PARAMS as SAMPLING_PARAMS
from llcuda_tui.core.worker.protocol._common import TOOL_CHOICES as TOOL_CHOICES
from llcuda_tui.core.worker.protocol._common import TOOL_NAME as TOOL_NAME
from llcuda_tui.core.worker.protocol._common import Limits as Limits
from llcuda_tui.core.worker.protocol._common import ParsedRequest as ParsedRequest
from llcuda_tui.core.worker.protocol._common import RequestError as RequestError
from llcuda_tui.core.worker.protocol._common import ToolPlan as ToolPlan
from llcuda_tui.core.worker.protocol._common import error_body as error_body
from llcuda_tui.core.worker.protocol._common import loading_heartbeat as loading_heartbeat
from llcuda_tui.core.worker.protocol._requests import parse_body as parse_body
from llcuda_tui.core.worker.protocol._requests import parse_chat as parse_chat
from llcuda_tui.core.worker.protocol._requests import parse_completion as parse_completion
from llcuda_tui.core.worker.protocol._requests import sampling_from_body as sampling_from_body
from llcuda_tui.core.worker.protocol._responses import StreamShaper as StreamShaper
from llcuda_tui.core.worker.protocol._responses import chat_logprobs as chat_logprobs
from llcuda_tui.core.worker.protocol._responses import finish_reason as finish_reason
from llcuda_tui.core.worker.protocol._responses import legacy_logprobs as legacy_logprobs
from llcuda_tui.core.worker.protocol._responses import new_id as new_id
from llcuda_tui.core.worker.protocol._responses import reply_choice as reply_choice
from llcuda_tui.core.worker.protocol._responses import usage as usage
from llcuda_tui.core.worker.protocol._responses import whole_reply as whole_reply
from llcuda_tui.core.worker.protocol._responses import whole_response as whole_response
