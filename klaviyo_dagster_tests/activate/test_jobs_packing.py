"""Packing profiles into bulk import jobs by count and by bytes, and matching import errors to rows."""

import orjson
import pytest

from klaviyo_dagster.activate.jobs import (
    MAX_JOB_BYTES,
    MAX_JOB_PROFILES,
    JobPacker,
    PackedProfile,
    failed_identities,
    job_body,
    pack,
)


def _item(i: int, pad: int = 0) -> PackedProfile:
    profile = {"type": "profile", "attributes": {"email": f"p{i}@example.com",
                                                 "properties": {"pad": "x" * pad}}}
    return PackedProfile(f"email:p{i}@example.com", f"h{i}", profile, len(orjson.dumps(profile)))


def _check_exact_bytes(batch, list_id=None):
    body = orjson.dumps(job_body([it.profile for it in batch.items], list_id))
    assert batch.body_bytes == len(body)


def test_count_cap_splits_at_ten_thousand_profiles():
    batches = list(pack(_item(i) for i in range(25_001)))
    assert [len(b.items) for b in batches] == [MAX_JOB_PROFILES, MAX_JOB_PROFILES, 5_001]
    for b in batches:
        _check_exact_bytes(b)
    assert sum(len(b.items) for b in batches) == 25_001


def test_byte_cap_splits_before_five_megabytes_and_measures_exact_body_size():
    items = [_item(i, pad=60_000) for i in range(200)]  # ~60 KB each: ~83 fit in 5 MB
    batches = list(pack(items))
    assert len(batches) == 3
    for b in batches:
        assert b.body_bytes <= MAX_JOB_BYTES
        _check_exact_bytes(b)
    # each batch was closed only because the next profile would not fit
    for b, nxt in zip(batches, batches[1:], strict=False):
        assert b.body_bytes + 1 + nxt.items[0].size > MAX_JOB_BYTES


def test_list_relationship_counts_in_the_envelope():
    packer = JobPacker(max_profiles=3, list_id="LIST1")
    out = [packer.add(_item(i)) for i in range(4)]
    assert [o is not None for o in out] == [False, False, False, True]
    _check_exact_bytes(out[3], "LIST1")
    assert job_body([], "LIST1")["data"]["relationships"]["lists"]["data"] == [{"type": "list", "id": "LIST1"}]


def test_limits_beyond_klaviyo_caps_are_refused():
    with pytest.raises(ValueError, match="max_profiles"):
        JobPacker(max_profiles=10_001)
    with pytest.raises(ValueError, match="max_bytes"):
        JobPacker(max_bytes=MAX_JOB_BYTES + 1)


def test_import_errors_match_rows_through_original_payload_identifiers():
    items = [_item(1), _item(2), _item(3)]
    errors = [
        {"code": "invalid", "title": "Invalid email", "detail": "domain rejected",
         "source": {"pointer": "/data/attributes/profiles/data/1"},
         "original_payload": {"email": "P2@example.com", "first_name": "x"}},
        {"code": "invalid", "title": "Oops", "detail": "?", "source": {}, "original_payload": {"email": "zz@x.com"}},
    ]
    failed, unmatched = failed_identities(errors, items)
    assert failed == {"email:p2@example.com": "invalid: Invalid email: domain rejected: at /data/attributes/profiles/data/1"}
    assert unmatched == ["invalid: Oops: ?"]
