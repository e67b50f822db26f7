import pickle

import pytest

from zimage.errors import Cancelled, DownloadCancelled, InvalidRequest, OutOfMemory, QueueFull, ReplicaFailed


@pytest.mark.parametrize("err", [
    QueueFull(3, 12), InvalidRequest("width", "must be a multiple of 16"), Cancelled(), DownloadCancelled(),
    OutOfMemory("The GPU ran out of memory.", "Turn on Low VRAM."), ReplicaFailed("gone", "retry"),
])
def test_typed_errors_survive_pickling_with_their_fields(err):
    """A Ray replica sends its typed error back to the app: class, message, hint, status and extra fields."""
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert back.to_dict() == err.to_dict() and back.user_text() == err.user_text()
    assert back.http_status == err.http_status and str(back) == str(err)
    if isinstance(err, QueueFull):
        assert back.retry_after_s == 12
    if isinstance(err, InvalidRequest):
        assert back.field == "width"
