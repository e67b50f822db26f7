"""store/loras.py: the LoRA folder's listing (usable or refused, trigger words, A1111's hash) and
names from a prompt turned into paths that stay inside the folder."""
import hashlib
import json
import pickle

import pytest

from zimage.errors import LoraError, LoraNameRefused, LoraNotFound, LoraUnreadable
from zimage.store import loras


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_model_dir):
    from zimage.testing.tiny_lora import make_tiny_loras

    root = tmp_path_factory.mktemp("lora-folder")
    make_tiny_loras(root, tiny_model_dir)
    return root


def by_name(folder):
    return {f.name: f for f in loras.scan(folder)}


def test_the_listing_names_every_file_by_its_path_and_refuses_pickles_and_truncated_files(folder):
    listed = by_name(folder)
    assert sorted(listed) == sorted(["comfy_style", "corrupt", "diffusers_style", "half_match", "kohya/fused_qkv", "kohya/kohya_style",
                                     "pickled", "sdxl_style", "styles/trigger_words", "wrong_shape"])
    for f in listed.values():
        assert f.size_bytes == f.path.stat().st_size
    assert listed["pickled"].refused_reason == "pickle files can run code; convert it to .safetensors"
    assert "truncated" in listed["corrupt"].refused_reason and not listed["corrupt"].usable
    usable = {n for n, f in listed.items() if f.usable}
    assert usable == set(listed) - {"pickled", "corrupt"}
    assert all(len(listed[n].autov3) == 12 for n in usable) and listed["pickled"].autov3 == ""
    assert listed["kohya/kohya_style"].to_dict()["name"] == "kohya/kohya_style"


def test_pickle_files_are_listed_without_being_opened(folder, monkeypatch):
    import builtins
    import io

    pt = folder / "pickled.pt"
    with pytest.raises(Exception):
        pickle.loads(pt.read_bytes())                   # the bytes would crash anything that unpickles them
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    monkeypatch.setattr(io, "open", builtins.open)
    listed = by_name(folder)
    assert listed["pickled"].refused_reason and str(pt) not in opened
    assert str(folder / "diffusers_style.safetensors") in opened          # the check sees real opens
    with pytest.raises(LoraUnreadable, match="pickle files can run code"):
        loras.resolve(folder, "pickled")
    with pytest.raises(LoraUnreadable, match="pickle files can run code"):
        loras.resolve(folder, "pickled.pt")
    assert str(pt) not in opened


def test_trigger_words_come_from_modelspec_then_kohyas_most_frequent_tags(folder):
    listed = by_name(folder)
    # modelspec.trigger_phrase "zk style, glowing ink"; ss_tag_frequency counts: zkstyle 40, 1girl 25,
    # landscape 12, outdoors 7 + 3 over two dataset folders
    assert listed["styles/trigger_words"].trigger_words == ("zk style", "glowing ink", "zkstyle", "1girl",
                                                            "landscape", "outdoors")
    assert listed["kohya/kohya_style"].trigger_words == ()


def test_autov3_is_the_sha256_of_the_tensor_bytes_after_the_header(folder):
    """Computed independently: the tensors' raw bytes in file order (read back by safetensors),
    which is what A1111's addnet_hash_safetensors hashes; editing metadata keeps the hash."""
    import torch
    from safetensors import safe_open

    listed = by_name(folder)
    for name in ("diffusers_style", "sdxl_style", "styles/trigger_words"):
        path = listed[name].path
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            n = int.from_bytes(path.read_bytes()[:8], "little")
            header = json.loads(path.read_bytes()[8:8 + n])
            keys.sort(key=lambda k: header[k]["data_offsets"][0])
            data = b"".join(f.get_tensor(k).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() for k in keys)
        assert listed[name].autov3 == hashlib.sha256(data).hexdigest()[:12]
    # the trigger-word file holds the kohya file's tensors with other metadata: same hash, other file
    a, b = listed["kohya/kohya_style"], listed["styles/trigger_words"]
    assert a.autov3 == b.autov3 and a.path.read_bytes() != b.path.read_bytes()


def test_hashes_are_reused_while_the_file_is_unchanged(folder, monkeypatch):
    known: dict = {}
    first = by_name_with(folder, known)
    monkeypatch.setattr(loras, "autov3_hash", lambda *a: pytest.fail("hashed again"))
    assert by_name_with(folder, known) == first


def by_name_with(folder, known):
    return {f.name: f.autov3 for f in loras.scan(folder, known)}


def test_a_header_claiming_a_huge_size_is_refused_without_reading_it(tmp_path):
    (tmp_path / "huge.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    listed = by_name(tmp_path)
    assert "header claims" in listed["huge"].refused_reason and "only 3 bytes" in listed["tiny"].refused_reason


def test_a_listed_name_resolves_inside_the_folder(folder):
    assert loras.resolve(folder, "kohya/kohya_style") == (folder / "kohya/kohya_style.safetensors").resolve()
    assert loras.resolve(folder, "kohya\\kohya_style.safetensors") == \
        (folder / "kohya/kohya_style.safetensors").resolve()
    with pytest.raises(LoraNotFound) as err:
        loras.resolve(folder, "no_such_lora")
    assert err.value.http_status == 404 and "no_such_lora" in err.value.message


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "kohya/../../x", "..\\..\\x", "C:/x",
                                  "a\x00b", "", "./kohya/kohya_style"])
def test_names_that_leave_the_folder_are_refused(folder, name):
    with pytest.raises(LoraNameRefused) as err:
        loras.resolve(folder, name)
    assert err.value.http_status == 400 and err.value.lora == name and repr(name) in err.value.message


def test_links_pointing_outside_are_refused_and_listed_as_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"x" * 64)
    lib = tmp_path / "loras"
    lib.mkdir()
    (lib / "link.safetensors").symlink_to(outside / "secret.safetensors")
    (lib / "linkdir").symlink_to(outside, target_is_directory=True)
    for name in ("link", "linkdir/secret"):
        with pytest.raises(LoraNameRefused, match="outside the LoRA folder"):
            loras.resolve(lib, name)
    listed = by_name(lib)
    assert "outside the LoRA folder" in listed["link"].refused_reason and "linkdir/secret" not in listed


@pytest.mark.parametrize("err", [LoraNameRefused("../x", "the name leaves the LoRA folder"),
                                 LoraNotFound("a/b"), LoraUnreadable("x.safetensors", "bad")])
def test_lora_errors_survive_pickling_with_the_lora_name(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and isinstance(back, LoraError)
    assert back.to_dict() == err.to_dict() and back.lora == err.lora and back.http_status == err.http_status


def test_make_tiny_lora_writes_the_files_the_listing_reads(tmp_path, capsys):
    from zimage.cli import main

    assert main(["make-tiny-lora", str(tmp_path / "l")]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert {"diffusers", "kohya", "comfy", "other_model", "half_match", "wrong_shape", "fused_qkv", "corrupt", "pickle",
            "triggers"} == set(printed)
    listed = by_name(tmp_path / "l")
    assert listed["diffusers_style"].usable and not listed["pickled"].usable


def test_a_bare_name_as_a1111_writes_it_finds_the_file_in_its_subfolder(folder, tmp_path):
    """Prompts copied from Civitai say <lora:kohya_style:0.8> whatever folder the file is in."""
    import shutil

    from zimage.errors import LoraAmbiguous

    assert loras.resolve(folder, "kohya_style") == (folder / "kohya/kohya_style.safetensors").resolve()
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(folder / "diffusers_style.safetensors", tmp_path / sub / "same.safetensors")
    with pytest.raises(LoraAmbiguous) as err:
        loras.resolve(tmp_path, "same")
    assert err.value.http_status == 409 and "a/same" in err.value.message and "b/same" in err.value.message


def test_a_picture_s_lora_hash_finds_the_file(folder):
    listed = loras.scan(folder)
    one = next(f for f in listed if f.name == "diffusers_style")
    assert loras.by_hash(listed, one.autov3.upper()) == one
    assert loras.by_hash(listed, "000000000000") is None and loras.by_hash(listed, "") is None


def test_a_listing_without_hashes_reads_only_headers_and_keeps_the_known_hashes(folder, monkeypatch):
    """The page's picker lists the folder without hashing: each file's header is read once, its
    tensor bytes never; a hash known already is still given."""
    known: dict = {}
    hashed = {f.name: f.autov3 for f in loras.scan(folder, known)}
    monkeypatch.setattr(loras, "autov3_hash", lambda *a: pytest.fail("a whole file was hashed"))
    reads = []
    real_read = loras.read_header
    monkeypatch.setattr(loras, "read_header", lambda path: (reads.append(path), real_read(path))[1])
    listed = {e["name"]: e for e in loras.a1111_list(folder, known, hash_files=False)}
    assert {n: e["autov3"] for n, e in listed.items() if e["usable"]} == {n: h for n, h in hashed.items() if h}
    assert len(reads) == len(set(reads))                  # one header read a file, not two
    assert listed["styles/trigger_words"]["metadata"]["modelspec.trigger_phrase"]
    fresh = loras.a1111_list(folder, {}, hash_files=False)
    assert all(e["autov3"] == "" for e in fresh) and [e["name"] for e in fresh] == list(listed)


# ---- issue 36: a LoRA file's metadata never stalls a listing --------------------------------------
def test_a_lora_with_200000_training_tags_lists_fast_with_its_most_frequent_tags(folder, tmp_path):
    """De-duplicating the tags in a list took 226 s for this file (the page never opened)."""
    import time

    from zimage.testing.tiny_lora import make_tagged_lora

    make_tagged_lora(folder / "kohya/kohya_style.safetensors", tmp_path / "big.safetensors", 200_000)
    start = time.perf_counter()
    listed = by_name(tmp_path)
    assert time.perf_counter() - start < 5              # generous: 0.8 s on a loaded 2-core box
    assert listed["big"].usable and listed["big"].trigger_words == tuple(f"tag_{i}" for i in range(12))


def test_a_header_is_read_once_per_file_version(folder, tmp_path, monkeypatch):
    import os
    import shutil

    for name in ("diffusers_style", "comfy_style"):
        shutil.copy(folder / f"{name}.safetensors", tmp_path / f"{name}.safetensors")
    reads = []
    real_read = loras.read_header
    monkeypatch.setattr(loras, "read_header", lambda path: (reads.append(path.name), real_read(path))[1])
    described: dict = {}
    first = loras.a1111_list(tmp_path, hash_files=False, described=described)
    assert sorted(reads) == ["comfy_style.safetensors", "diffusers_style.safetensors"]
    reads.clear()
    assert loras.a1111_list(tmp_path, hash_files=False, described=described) == first and reads == []
    target = tmp_path / "diffusers_style.safetensors"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))          # touched: read again
    loras.a1111_list(tmp_path, hash_files=False, described=described)
    assert reads == ["diffusers_style.safetensors"]
    # Replaced by a file of the same size with the old mtime put back (cp -p): ctime still moves.
    reads.clear()
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    loras.a1111_list(tmp_path, hash_files=False, described=described)
    assert reads == ["diffusers_style.safetensors"]
    (tmp_path / "comfy_style.safetensors").unlink()                         # a file gone is forgotten
    loras.a1111_list(tmp_path, hash_files=False, described=described)
    assert list(described) == [str(target)]


@pytest.mark.parametrize("counts", ['{"d": {"a": Infinity, "b": 2}}', '{"d": {"a": NaN, "b": 2}}',
                                    '{"d": {"a": 1e400, "b": 2}}', '[1, 2]', '{"d": [1]}', "{" * 100_000])
def test_tag_counts_that_are_no_counts_are_skipped(counts):
    """int(Infinity) raised OverflowError out of the listing (a 500 on /sdapi/v1/loras)."""
    assert loras.trigger_words({"ss_tag_frequency": counts}) in ((), ("b",))


def test_a_header_too_long_to_list_is_listed_by_name_and_hashed_without_parsing(folder, tmp_path, monkeypatch):
    import shutil

    shutil.copy(folder / "diffusers_style.safetensors", tmp_path / "big_header.safetensors")
    expected = loras.autov3_hash(tmp_path / "big_header.safetensors")
    monkeypatch.setattr(loras, "MAX_LISTED_HEADER_BYTES", 16)
    monkeypatch.setattr(loras, "read_header", lambda path: pytest.fail("the header was parsed"))
    (entry,) = loras.scan(tmp_path)
    assert entry.usable and entry.trigger_words == () and entry.autov3 == expected
