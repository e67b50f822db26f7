"""Typed errors. Each carries a message a user can act on, a hint (what to do) and one HTTP status.

The page shows `message` and `hint`; the JSON API answers `{"error": {...}}` with `http_status`.
Tracebacks are logged, never shown.
"""
from __future__ import annotations

from .i18n import error_text


class ZImageError(Exception):
    http_status = 500
    code = "internal_error"

    def __init__(self, message: str, hint: str = "", **details):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def text(self, lang: str = "en") -> tuple[str, str]:
        """(message, hint) in `lang` ("en" or "zh", i18n.language_of); the code stays English."""
        return error_text(self.code, self.message, self.hint, lang, self.details.get("field"))

    def to_dict(self, lang: str = "en") -> dict:
        message, hint = self.text(lang)
        out = {"code": self.code, "message": message}
        if hint:
            out["hint"] = hint
        out.update(self.details)
        return out

    def user_text(self, lang: str = "en") -> str:
        message, hint = self.text(lang)
        return f"{message} {hint}".strip()

    def __reduce__(self):
        # Typed errors cross process boundaries (a Ray replica answers the app with one); subclasses'
        # __init__ take other arguments than the message, so rebuild from the fields, not the args.
        return _rebuild, (type(self), self.message, dict(self.__dict__))


def _rebuild(cls: type, message: str, fields: dict) -> ZImageError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(fields)
    return err


class InvalidRequest(ZImageError):
    """A request field is missing, of the wrong type or out of range."""
    http_status = 422
    code = "invalid_request"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", field=field)
        self.field = field


class BadRequestBody(ZImageError):
    """The body is not JSON, not an object, or of the wrong content type."""
    http_status = 400
    code = "bad_body"


class QueueFull(ZImageError):
    http_status = 429
    code = "queue_full"

    def __init__(self, waiting: int, retry_after_s: int):
        super().__init__(f"The generation queue is full ({waiting} jobs waiting).",
                         "Try again in a few seconds.", retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class ModelUnavailable(ZImageError):
    """The model could not be found or downloaded."""
    http_status = 503
    code = "model_unavailable"


class NotAModelId(ModelUnavailable):
    """Neither a folder nor a ModelScope id (owner/name): nothing to look up or download."""


class ModelLoadFailed(ZImageError):
    """The model files are there but could not be loaded (corrupt, incomplete, unsupported)."""
    http_status = 503
    code = "model_load_failed"


class OutOfMemory(ZImageError):
    http_status = 507
    code = "out_of_memory"


class Cancelled(ZImageError):
    http_status = 409
    code = "cancelled"

    def __init__(self, message: str = "The generation was stopped."):
        super().__init__(message)


class IllegalTransition(ZImageError):
    """A programming error: the state machine refused a transition."""
    http_status = 409
    code = "illegal_transition"


class ManagerClosed(ZImageError):
    http_status = 503
    code = "shutting_down"

    def __init__(self):
        super().__init__("The server is shutting down.")


class UnsupportedMediaType(ZImageError):
    http_status = 415
    code = "unsupported_media_type"


class BodyTooLarge(ZImageError):
    http_status = 413
    code = "body_too_large"


class ModelInUse(ZImageError):
    """Refused: the files are in use by the loaded model."""
    http_status = 409
    code = "model_in_use"


class DiskFull(ZImageError):
    http_status = 507
    code = "disk_full"


class DownloadCancelled(ZImageError):
    http_status = 409
    code = "download_cancelled"

    def __init__(self):
        super().__init__("The download was cancelled.", "Press Preload to continue it where it stopped.")


class CacheCorrupt(ModelLoadFailed):
    code = "cache_corrupt"


class ReplicaFailed(ZImageError):
    """A Ray Serve replica died (killed, out of memory, node lost) and the one retry failed too."""
    http_status = 503
    code = "replica_failed"


class BackendUnavailable(ZImageError):
    """The Ray cluster cannot be reached or the deployment did not start."""
    http_status = 503
    code = "backend_unavailable"


class WorkerCrashed(ZImageError):
    """The model worker process ended while it ran this job (killed, a CUDA fault, the OOM killer);
    the page stays up and starts a new one."""
    http_status = 503
    code = "worker_crashed"


class UnknownEndpoint(ZImageError):
    """A request named an event, API name, session or stream this page does not have."""
    http_status = 404
    code = "not_found"


class GenerationFailed(ZImageError):
    """The pipeline call failed with something other than out-of-memory (the traceback is logged)."""
    http_status = 500
    code = "generation_failed"


class ConfirmationMismatch(ZImageError):
    """A destructive action named one model while the user confirmed another."""
    http_status = 409
    code = "confirmation_mismatch"

    def __init__(self, model_id: str, confirmed_id: str):
        super().__init__(f"Not deleted: the request names {model_id} but {confirmed_id} was confirmed.",
                         "Pick the model again and confirm that one.", model_id=model_id,
                         confirmed_id=confirmed_id)


class LoraError(ZImageError):
    """A LoRA could not be used; `lora` names it (the name the prompt used, or the file)."""
    http_status = 422
    code = "lora_error"

    def __init__(self, lora: str, message: str, hint: str = "", **details):
        super().__init__(message, hint, lora=lora, **details)
        self.lora = lora


class LoraNameRefused(LoraError):
    """The name points outside the LoRA folder (`..`, an absolute path, a link out) or holds a NUL."""
    http_status = 400
    code = "lora_name_refused"

    def __init__(self, lora: str, why: str):
        super().__init__(lora, f"LoRA name {lora!r} refused: {why}.",
                         "Use the name the LoRA list shows (its path inside the LoRA folder, without .safetensors).")


class LoraNotFound(LoraError):
    http_status = 404
    code = "lora_not_found"

    def __init__(self, lora: str):
        # Not the folder's path: the message reaches the page, the JSON body and MCP clients.
        super().__init__(lora, f"No LoRA named {lora!r} in the LoRA folder.",
                         "Put the .safetensors file in the LoRA folder, or pick one from the LoRA list.")


class LoraUnreadable(LoraError):
    """Not a readable safetensors LoRA: truncated, corrupt, a pickle file, or non-finite numbers."""
    code = "lora_unreadable"


class LoraMismatch(LoraError):
    """The file is a LoRA, but for another model: none of its keys fit Z-Image's transformer."""
    code = "lora_mismatch"


class LoraNeedsFullWeights(LoraError):
    """The transformer is int8 or fp8: a LoRA cannot be fused there exactly."""
    http_status = 409
    code = "lora_needs_full_weights"


class LoraModeUnsupported(LoraError):
    """LoRAs are fused into full-precision resident weights; this mode (low-VRAM plan, int8, fp8) has none."""
    http_status = 409
    code = "lora_mode_unsupported"

    def __init__(self, lora: str, mode: str, hint: str):
        super().__init__(lora, f"LoRA {lora} cannot be used with {mode} yet.", hint, mode=mode)


class LoraAmbiguous(LoraError):
    """A bare LoRA name fits files in several subfolders."""
    http_status = 409
    code = "lora_ambiguous"

    def __init__(self, lora: str, candidates: list[str]):
        super().__init__(lora, f"LoRA name {lora!r} fits {len(candidates)} files: {', '.join(candidates)}.",
                         "Write the name with its folder, as the LoRA list shows it.", candidates=candidates)


class HistoryPathRefused(ZImageError):
    """A History item named a file outside the outputs folder (`..`, an absolute path, a link out,
    a hidden folder) or something that is no image of it."""
    http_status = 400
    code = "history_path_refused"

    def __init__(self, item: str, why: str):
        super().__init__(f"History item {item!r} refused: {why}.",
                         "Pick the image in the History tab again.", item=item)


class HistoryItemNotFound(ZImageError):
    http_status = 404
    code = "history_item_not_found"

    def __init__(self, item: str):
        super().__init__(f"No image {item!r} in the history.", "Press Refresh in the History tab.", item=item)


class HistoryItemChanged(ZImageError):
    """The file was replaced, changed or removed since the page listed it: a delete would hit another image."""
    http_status = 409
    code = "history_item_changed"

    def __init__(self, item: str, why: str):
        super().__init__(f"Not deleted: {item} {why} since it was listed.",
                         "Press Refresh in the History tab and pick it again.", item=item)


class HistoryBusy(ZImageError):
    """Another copy of the app (or a tool) held the History index's write lock past the wait: the
    index is in use, not damaged; nothing is moved or rebuilt."""
    http_status = 503
    code = "history_busy"

    def __init__(self, index: str):
        super().__init__(f"The History index {index} is in use by another program.",
                         "Try again in a few seconds.", index=index)


class QueueBusy(ZImageError):
    """Another program held the kept queue's write lock past the wait: in use, not damaged."""
    http_status = 503
    code = "queue_busy"

    def __init__(self, index: str):
        super().__init__(f"The kept queue {index} is in use by another program.", "Try again in a few seconds.",
                         index=index)


class KeptJobNotFound(ZImageError):
    http_status = 404
    code = "queue_job_not_found"

    def __init__(self, job_id: int):
        super().__init__(f"No kept job {job_id} in the queue.", "List the queue again (GET /queue).", id=job_id)


class KeptJobActive(ZImageError):
    """Run asked for a job this process already has queued or running."""
    http_status = 409
    code = "queue_job_active"

    def __init__(self, job_id: int):
        super().__init__(f"Job {job_id} is already queued or running.", "Wait for it, or delete it to drop it.",
                         id=job_id)


class KeptJobUnreadable(ZImageError):
    """A kept job whose input images are gone or whose stored request is not one any more."""
    http_status = 410
    code = "queue_job_unreadable"

    def __init__(self, job_id: int, why: str):
        super().__init__(f"Job {job_id} cannot be run again: {why}.", "Delete it and submit the request again.",
                         id=job_id)


class ControlNetRefused(ZImageError):
    """ControlNet cannot run on the model as it is placed now (a low-VRAM plan, int8 or fp8 weights)."""
    http_status = 409
    code = "controlnet_refused"


class ModelFileUnsupported(ModelLoadFailed):
    """A file named as a model (or a part of one) is not a Z-Image file this app can load, and why."""
    http_status = 422
    code = "model_file_unsupported"


class ModelPartMissing(ModelLoadFailed):
    """A single-file model lacks a part (text encoder, VAE, the configs and tokenizer) and where to put it."""
    code = "model_part_missing"


class EnhancerFailed(ZImageError):
    """The prompt enhancer could not answer (the endpoint is down or answered nonsense)."""
    http_status = 502
    code = "enhancer_failed"


class EnhancerTimeout(ZImageError):
    http_status = 504
    code = "enhancer_timeout"

    def __init__(self, seconds: float):
        super().__init__(f"The prompt enhancer gave no answer within {seconds:g} s.",
                         "Try again, or raise --enhancer-timeout.", seconds=seconds)
