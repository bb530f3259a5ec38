"""Model refs: what resolves where, and everything that must be refused before disk or network."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import pytest

from services.hive.refs import MAX_REF_LENGTH, HubRef, InvalidModelRef, ModelRef, parse_model_ref, resolve_in

HUB = "https://hub.example"


def parse(ref: str, endpoint: str = HUB) -> ModelRef:
    return parse_model_ref(ref, endpoint)


def url_of_length(n: int) -> str:
    """A valid https URL exactly `n` characters long (every segment under 255 characters)."""
    url = "https://files.example/"
    while n - len(url) > 205:
        url += "a" * 200 + "/"
    url += "b" * (n - len(url) - len(".bin")) + ".bin"
    assert len(url) == n
    return url


# -- hf: refs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "url", "names"),
    [
        (
            "hf:org/repo::file=model.gguf",
            f"{HUB}/org/repo/resolve/main/model.gguf",
            ("org/repo", "main", "model.gguf"),
        ),
        (
            "hf:TheBloke/Llama-2-7B-GGUF::file=llama-2-7b.Q4_K_M.gguf",
            f"{HUB}/TheBloke/Llama-2-7B-GGUF/resolve/main/llama-2-7b.Q4_K_M.gguf",
            ("TheBloke/Llama-2-7B-GGUF", "main", "llama-2-7b.Q4_K_M.gguf"),
        ),
        (
            "hf:org/repo@main::file=model.gguf",
            f"{HUB}/org/repo/resolve/main/model.gguf",
            ("org/repo", "main", "model.gguf"),
        ),
        (
            "hf:org/repo@v1.0::file=model.gguf",
            f"{HUB}/org/repo/resolve/v1.0/model.gguf",
            ("org/repo", "v1.0", "model.gguf"),
        ),
        (
            "hf:org/repo@0123456789abcdef0123456789abcdef01234567::file=model.gguf",
            f"{HUB}/org/repo/resolve/0123456789abcdef0123456789abcdef01234567/model.gguf",
            ("org/repo", "0123456789abcdef0123456789abcdef01234567", "model.gguf"),
        ),
        (
            "hf:org/repo@refs/pr/1::file=model.gguf",
            f"{HUB}/org/repo/resolve/refs%2Fpr%2F1/model.gguf",
            ("org/repo", "refs/pr/1", "model.gguf"),
        ),
        (
            "hf:org/repo::file=a/b/c.safetensors",
            f"{HUB}/org/repo/resolve/main/a/b/c.safetensors",
            ("org/repo", "main", "a/b/c.safetensors"),
        ),
        (
            "hf:org/repo@dev::file=onnx/model.onnx",
            f"{HUB}/org/repo/resolve/dev/onnx/model.onnx",
            ("org/repo", "dev", "onnx/model.onnx"),
        ),
        (
            "hf:org/repo::file=my model.gguf",
            f"{HUB}/org/repo/resolve/main/my%20model.gguf",
            ("org/repo", "main", "my model.gguf"),
        ),
        (
            "hf:org/repo::file=.gitattributes",
            f"{HUB}/org/repo/resolve/main/.gitattributes",
            ("org/repo", "main", ".gitattributes"),
        ),
        (  # a repo id without a namespace, as huggingface_hub accepts one
            "hf:gpt2@v1::file=config.json",
            f"{HUB}/gpt2/resolve/v1/config.json",
            ("gpt2", "v1", "config.json"),
        ),
        (
            "hf:a.b_c-d/e.f_g-h::file=model...gguf",
            f"{HUB}/a.b_c-d/e.f_g-h/resolve/main/model...gguf",
            ("a.b_c-d/e.f_g-h", "main", "model...gguf"),
        ),
    ],
)
def test_hf_refs_resolve_to_the_hub(ref: str, url: str, names: tuple[str, str, str]) -> None:
    """A file ref names a repo, a revision and a file; where it lands is the hub cache's (hf_cache.py)."""
    parsed = parse(ref)
    assert parsed.raw == ref
    assert parsed.url == url
    assert parsed.hub_ref == HubRef(HUB, *names)
    assert parsed.rel_path is None and not parsed.whole_model
    assert parsed.hub is True


@pytest.mark.parametrize(
    ("ref", "repo_id", "revision"),
    [
        ("hf:org/repo", "org/repo", "main"),
        ("hf:meta-llama/Llama-3.1-8B@main", "meta-llama/Llama-3.1-8B", "main"),
        ("hf:org/repo@v1.0", "org/repo", "v1.0"),
        ("hf:org/repo@refs/pr/1", "org/repo", "refs/pr/1"),
        ("hf:gpt2", "gpt2", "main"),
        (
            "hf:org/repo@0123456789abcdef0123456789abcdef01234567",
            "org/repo",
            "0123456789abcdef0123456789abcdef01234567",
        ),
    ],
)
def test_a_ref_without_a_file_is_the_whole_model(ref: str, repo_id: str, revision: str) -> None:
    parsed = parse(ref)
    assert parsed.whole_model and parsed.hub and parsed.rel_path is None
    assert parsed.hub_ref == HubRef(HUB, repo_id, revision, None)
    assert parsed.url == f"{HUB}/api/models/{repo_id}/revision/{quote(revision, safe='')}"


@pytest.mark.parametrize(
    ("endpoint", "base"),
    [
        ("https://hub.example", "https://hub.example"),
        ("https://hub.example/", "https://hub.example"),
        ("https://hub.example///", "https://hub.example"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("http://127.0.0.1:9000/mirror/", "http://127.0.0.1:9000/mirror"),
    ],
)
def test_hf_endpoint_forms(endpoint: str, base: str) -> None:
    parsed = parse("hf:org/repo::file=model.gguf", endpoint)
    assert parsed.url == f"{base}/org/repo/resolve/main/model.gguf"
    assert parsed.hub_ref is not None and parsed.hub_ref.endpoint == base


@pytest.mark.parametrize("endpoint", ["", "hub.example", "ftp://hub.example", "file:///srv/hub", "https://"])
def test_a_bad_hf_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(InvalidModelRef):
        parse("hf:org/repo::file=model.gguf", endpoint)


@pytest.mark.parametrize(
    "ref",
    [
        "hf:",
        "hf:org/repo::file=",
        "hf:org/repo@",
        "hf:org/repo@main::",
        "hf:org/repo:file=model.gguf",
        "hf:org/repo::File=model.gguf",
        "hf:org/repo::path=model.gguf",
        "hf:org/repo model.gguf",
        "hf:/repo::file=model.gguf",
        "hf:org/::file=model.gguf",
        "hf:org/repo/sub::file=model.gguf",
        "hf:../x::file=a",
        "hf:org/..::file=a",
        "hf:./repo::file=a",
        "hf:-org/repo::file=a",
        "hf:org/re po::file=a",
        "hf: org/repo::file=a",
        "hf:org/repo@::file=a",
        "hf:org/repo@../x::file=a",
        "hf:org/repo@a/../b::file=a",
        "hf:org/repo@a/..::file=a",
        "hf:org/repo@a//b::file=a",
        "hf:org/repo@a/::file=a",
        "hf:org/repo@a b::file=a",
        "hf:org/repo@a%2fb::file=a",
        "hf:org/repo@a?b::file=a",
        "hf:org/" + "r" * 97 + "::file=a",
        "hf:org/repo@" + "v" * 129 + "::file=a",
        "HF:org/repo::file=a",
        "hf//org/repo::file=a",
    ],
)
def test_malformed_hf_refs_are_refused(ref: str) -> None:
    with pytest.raises(InvalidModelRef):
        parse(ref)


BAD_FILE_PATHS = [
    "..",
    "../x",
    "../../etc/passwd",
    "a/../b",
    "a/..",
    ".",
    "./a",
    "a/./b",
    "a/.",
    "a//b",
    "a/",
    "/abs",
    "/etc/passwd",
    "a\\b",
    "..\\x",
    "C:\\x",
    "a\x00b",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x1bb",
    "a\x01b",
    "a\x7fb",
    "model.gguf.part",
    "dir/model.part",
    ".part",
    "x" * 256,
    "dir/" + "x" * 256,
]


@pytest.mark.parametrize(
    ("path", "quoted"),
    [("%41.gguf", "%2541.gguf"), ("a%2fb", "a%252fb"), ("%2e%2e/x", "%252e%252e/x"), ("50%.txt", "50%25.txt")],
)
def test_a_percent_in_an_hf_file_path_is_part_of_the_name_never_decoded(path: str, quoted: str) -> None:
    ref = parse(f"hf:org/repo::file={path}")
    assert ref.hub_ref is not None and ref.hub_ref.file == path
    assert ref.url == f"{HUB}/org/repo/resolve/main/{quoted}"


@pytest.mark.parametrize("path", BAD_FILE_PATHS)
def test_hf_file_paths_that_could_escape_or_clash_are_refused(path: str) -> None:
    with pytest.raises(InvalidModelRef):
        parse(f"hf:org/repo::file={path}")


@pytest.mark.parametrize(
    "ref",
    [
        "hf:org/repo::file=a\x85b.gguf",
        "hf:org/repo::file=a\x9b31mb.gguf",
        "hf:org/repo::file=a\x9fb.gguf",
        "https://files.example/a\x85b.gguf",
        "https://files.example/a%C2%85b.gguf",
        "https://files.example/a%C2%9B31mb.gguf",
    ],
)
def test_c1_control_characters_are_refused(ref: str) -> None:
    """The contract refuses control characters; U+0080..U+009F (NEL, CSI, ...) are control characters too."""
    with pytest.raises(InvalidModelRef):
        parse(ref)


def test_a_directory_segment_ending_in_part_is_refused() -> None:
    """`x.part` is where `x` is written while it downloads; a ref may not turn it into a directory."""
    parse("hf:org/repo::file=x")
    with pytest.raises(InvalidModelRef):
        parse("hf:org/repo::file=x.part/y")


def test_different_revisions_never_share_a_name() -> None:
    """`refs/pr/1` is quoted as `refs%2Fpr%2F1` in the URL; a branch really named `refs--pr--1` stays apart."""
    slashed = parse("hf:org/repo@refs/pr/1::file=model.gguf")
    dashed = parse("hf:org/repo@refs--pr--1::file=model.gguf")
    assert slashed.url != dashed.url
    assert slashed.hub_ref != dashed.hub_ref


def test_a_segment_of_255_characters_is_fine() -> None:
    name = "x" * 251 + ".bin"
    parsed = parse(f"hf:org/repo::file={name}")
    assert parsed.hub_ref is not None and parsed.hub_ref.file == name


# -- http(s) URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "rel"),
    [
        ("https://files.example/models/x.gguf", "_url/files.example/models/x.gguf"),
        ("http://files.example/x.gguf", "_url/files.example/x.gguf"),
        ("http://127.0.0.1:8000/org/repo/model.bin", "_url/127.0.0.1_8000/org/repo/model.bin"),
        ("https://files.example:8443/a/b/c.bin", "_url/files.example_8443/a/b/c.bin"),
        ("https://Files.EXAMPLE/Model.GGUF", "_url/files.example/Model.GGUF"),
        ("HTTPS://files.example/x.bin", "_url/files.example/x.bin"),
        ("https://files.example/x.gguf?download=true&sig=a%2Fb", "_url/files.example/x.gguf?download=true&sig=a%252Fb"),
        ("https://files.example/x.gguf?p=../../etc/passwd", "_url/files.example/x.gguf?p=..%2F..%2Fetc%2Fpasswd"),
        ("https://files.example/caf%C3%A9.gguf", "_url/files.example/café.gguf"),
        ("https://files.example/a%20b.gguf", "_url/files.example/a b.gguf"),
        (
            "https://files.example/org/repo/resolve/main/model.gguf",
            "_url/files.example/org/repo/resolve/main/model.gguf",
        ),
        ("http://[::1]:8080/x.bin", "_url/__1_8080/x.bin"),
    ],
)
def test_urls_are_downloaded_as_given(ref: str, rel: str) -> None:
    parsed = parse(ref)
    assert parsed.raw == ref
    assert parsed.url == ref  # query strings and all: the URL is untouched
    assert parsed.rel_path == PurePosixPath(rel)
    assert parsed.hub is False


def test_the_query_string_is_part_of_the_identity_and_a_fragment_is_not() -> None:
    a = parse("https://files.example/x.gguf?token=1")
    b = parse("https://files.example/x.gguf?token=2")
    assert (a.url, b.url) == ("https://files.example/x.gguf?token=1", "https://files.example/x.gguf?token=2")
    assert a.rel_path == PurePosixPath("_url/files.example/x.gguf?token=1")
    assert b.rel_path == PurePosixPath("_url/files.example/x.gguf?token=2")
    c = parse("https://files.example/x.gguf?token=1#part")
    assert c.url == a.url and c.rel_path == a.rel_path
    assert parse("https://files.example/x.gguf#part").rel_path == PurePosixPath("_url/files.example/x.gguf")


def test_a_query_cannot_turn_a_name_into_a_partial() -> None:
    with pytest.raises(InvalidModelRef):
        parse("https://files.example/x.gguf?a=.part")


def test_a_url_on_the_hubs_host_is_a_hub_ref_only_as_a_resolve_address() -> None:
    """HF_TOKEN goes only to hub files (an hf: ref, or a pasted resolve URL: test_refs_resolve_urls.py),
    never to any other URL, even one on the hub's host."""
    assert parse(f"{HUB}/org/repo/resolve/main/model.gguf").hub is True
    assert parse(f"{HUB}/org/repo/raw/main/model.gguf").hub is False


@pytest.mark.parametrize(
    "ref",
    [
        "ftp://files.example/x.bin",
        "file:///etc/passwd",
        "s3://bucket/key.bin",
        "gs://bucket/key.bin",
        "javascript:alert(1)",
        "files.example/x.bin",
        "//files.example/x.bin",
        "/etc/passwd",
        "model.gguf",
        "http:x.bin",
        "http:/x.bin",
        "http:///x.bin",
        "http://u:p@files.example/x.bin",
        "http://user@files.example/x.bin",
        "https://u:@files.example/x.bin",
        "https://files.example@evil.example/x.bin",
        "https://files.example",
        "https://files.example/",
        "https://files.example/dir/",
        "https://files.example?x=1",
        "https://files.example/a%2fb.bin",
        "https://files.example/a%2Fb.bin",
        "https://files.example/a%5cb.bin",
        "https://files.example/%2e%2e/x.bin",
        "https://files.example/%2E%2E/x.bin",
        "https://files.example/a/%2e%2e/b.bin",
        "https://files.example/a/.%2e/b.bin",
        "https://files.example/a%252e%252e/b.bin",
        "https://files.example/../x.bin",
        "https://files.example/a/../b.bin",
        "https://files.example/a/..",
        "https://files.example/./x.bin",
        "https://files.example/a//b.bin",
        "https://files.example/a b.bin",
        "https://files.example/x.bin ",
        " https://files.example/x.bin",
        "https://files.example/a\\b.bin",
        "https://files.example/a%00b.bin",
        "https://files.example/a%0ab.bin",
        "https://files.example/a%0Db.bin",
        "https://files.example/a%7fb.bin",
        "https://files.example/x.bin\n",
        "https://files.example/x.bin\x00",
        "https://files.example/x.bin.part",
        "https://files.example/x.bin%2epart",
        "https://files.example:99999/x.bin",
        "https://files.example:port/x.bin",
        "https://../x.bin",
        "https://./x.bin",
        "https://files.example/" + "x" * 256,
    ],
)
def test_bad_urls_are_refused(ref: str) -> None:
    with pytest.raises(InvalidModelRef):
        parse(ref)


# -- anything else -----------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["", " ", "\n", "hf", "http", "https:", "org/repo", "latest"])
def test_empty_and_schemeless_refs_are_refused(ref: str) -> None:
    with pytest.raises(InvalidModelRef):
        parse(ref)


def test_a_non_string_ref_is_refused() -> None:
    with pytest.raises(InvalidModelRef):
        parse_model_ref(None, HUB)  # type: ignore[arg-type]


def test_length_limit_is_2048_characters() -> None:
    assert MAX_REF_LENGTH == 2048
    longest = url_of_length(MAX_REF_LENGTH)
    assert parse(longest).url == longest
    with pytest.raises(InvalidModelRef, match="2048"):
        parse(url_of_length(MAX_REF_LENGTH + 1))
    hf_long = "hf:org/repo::file=" + "/".join(["d" * 200] * 11)
    assert len(hf_long) > MAX_REF_LENGTH
    with pytest.raises(InvalidModelRef):
        parse(hf_long)


def test_invalid_model_ref_is_a_value_error() -> None:
    assert issubclass(InvalidModelRef, ValueError)


# -- resolve_in --------------------------------------------------------------------------------


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


GOOD_REFS = [
    "https://files.example/org/repo/model.gguf",
    "https://files.example/a/b/c.safetensors",
    "https://files.example:8443/a/b/c.bin?x=1",
    "http://[::1]:8080/x.bin",
]


@pytest.mark.parametrize("ref", GOOD_REFS)
def test_resolve_in_places_good_refs_inside_the_models_dir(models: Path, ref: str) -> None:
    rel = parse(ref).rel_path
    assert rel is not None
    dest = resolve_in(models, rel)
    assert dest.is_absolute()
    assert dest.is_relative_to(models.resolve())
    assert dest != models.resolve()
    assert dest == models.resolve().joinpath(*rel.parts)
    assert not dest.exists()  # resolving touches nothing


def test_resolve_in_accepts_a_relative_models_dir(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(models.parent)
    dest = resolve_in(Path("models"), PurePosixPath("org/repo/model.gguf"))
    assert dest == models.resolve() / "org" / "repo" / "model.gguf"


@pytest.mark.parametrize("rel", ["..", "../x", "../../etc/passwd", "a/../../x", "/etc/passwd", "/", ".", "", "a/.."])
def test_resolve_in_refuses_paths_outside_the_models_dir(models: Path, rel: str) -> None:
    with pytest.raises(InvalidModelRef):
        resolve_in(models, PurePosixPath(rel))


def test_resolve_in_refuses_a_symlinked_directory_pointing_outside(models: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (models / "_url").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidModelRef):
        resolve_in(models, parse("https://files.example/model.gguf").rel_path)
    assert list(outside.iterdir()) == []


def test_resolve_in_refuses_a_symlinked_file_pointing_outside(models: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("nope")
    (models / "_url" / "files.example").mkdir(parents=True)
    (models / "_url" / "files.example" / "model.gguf").symlink_to(secret)
    with pytest.raises(InvalidModelRef):
        resolve_in(models, parse("https://files.example/model.gguf").rel_path)
    assert secret.read_text() == "nope"


def test_resolve_in_refuses_a_dangling_symlink_pointing_outside(models: Path, tmp_path: Path) -> None:
    (models / "_url").symlink_to(tmp_path / "not-there-yet", target_is_directory=True)
    with pytest.raises(InvalidModelRef):
        resolve_in(models, parse("https://files.example/x.bin").rel_path)


def test_resolve_in_refuses_a_symlink_back_to_the_root(models: Path) -> None:
    (models / "loop").symlink_to(models, target_is_directory=True)
    with pytest.raises(InvalidModelRef):
        resolve_in(models, PurePosixPath("loop"))


def test_resolve_in_follows_symlinks_that_stay_inside(models: Path) -> None:
    (models / "real").mkdir()
    (models / "org").symlink_to(models / "real", target_is_directory=True)
    dest = resolve_in(models, PurePosixPath("org/repo/model.gguf"))
    assert dest == models.resolve() / "real" / "repo" / "model.gguf"


def test_resolve_in_works_when_the_models_dir_itself_is_a_symlink(models: Path, tmp_path: Path) -> None:
    link = tmp_path / "models-link"
    link.symlink_to(models, target_is_directory=True)
    dest = resolve_in(link, PurePosixPath("org/repo/model.gguf"))
    assert dest == models.resolve() / "org" / "repo" / "model.gguf"
    assert os.path.commonpath([dest, models.resolve()]) == str(models.resolve())
