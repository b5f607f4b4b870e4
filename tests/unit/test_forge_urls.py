"""Which remotes the GitHub forge handles, which repository they name, what git gets to push."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecoder.errors import ForgeError
from telecoder.forges.github import GitHubForge
from telecoder.forges.remote import parse_remote
from telecoder.protocols import Publication
from telecoder.settings import Settings

TOKEN = "ghp_unitTestToken0123456789"

GITHUB_REMOTES = [
    "https://github.com/acme/repo",
    "https://github.com/acme/repo.git",
    "https://github.com/acme/repo/",
    "https://GitHub.com/acme/repo.git",
    "https://user@github.com/acme/repo.git",
    "https://x-access-token:secret@github.com/acme/repo.git",
    "https://github.com:443/acme/repo.git",
    "http://github.com/acme/repo.git",
    "git@github.com:acme/repo.git",
    "git@github.com:acme/repo",
    "github.com:acme/repo.git",
    "ssh://git@github.com/acme/repo.git",
    "ssh://git@github.com:22/acme/repo.git",
    "git+ssh://git@github.com/acme/repo.git",
    "git://github.com/acme/repo.git",
]

OTHER_REMOTES = [
    "https://gitlab.com/acme/repo.git",
    "git@gitlab.com:acme/repo.git",
    "https://github.com.evil.example/acme/repo.git",
    "https://notgithub.com/acme/repo.git",
    "ssh://git@example.org/github.com/repo.git",
    "/srv/git/github.com/repo.git",
    "./github.com:acme/repo.git",
    "file:///srv/git/acme/repo.git",
    "",
    "https:///acme/repo.git",
]


@pytest.mark.parametrize("url", GITHUB_REMOTES)
def test_github_remotes_are_handled_and_name_acme_repo(url: str) -> None:
    forge = GitHubForge()
    assert forge.handles(url)
    assert forge.repo_slug(url) == "acme/repo"


@pytest.mark.parametrize("url", OTHER_REMOTES)
def test_other_remotes_are_not_handled(url: str) -> None:
    assert not GitHubForge().handles(url)


@pytest.mark.parametrize(
    ("url", "slug"),
    [
        ("/tmp/x/remotes/acme/repo.git", "acme/repo"),
        ("/tmp/x/remotes/acme/repo.git/", "acme/repo"),
        ("/tmp/x/remotes/acme/repo", "acme/repo"),
        ("../remotes/acme/repo.git", "acme/repo"),
        ("file:///tmp/x/acme/repo.git", "acme/repo"),
        ("https://gitlab.com/group/subgroup/acme/repo.git", "acme/repo"),
        ("https://ghe.example.com/acme/my.repo.git", "acme/my.repo"),
        ("git@github.com:acme/repo.git.git", "acme/repo.git"),
    ],
)
def test_repo_slug_takes_the_last_two_segments_of_any_remote(url: str, slug: str) -> None:
    assert GitHubForge.repo_slug(url) == slug


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "repo.git",
        "/repo.git",
        "https://github.com/acme",
        "https://github.com/acme/.git",
        "git@github.com:repo.git",
        "https://github.com/acme/..",
        "https://github.com:notaport/acme/repo.git",
    ],
)
def test_repo_slug_refuses_urls_that_name_no_repository(url: str) -> None:
    with pytest.raises(ForgeError, match="remote URL"):
        GitHubForge.repo_slug(url)


def test_errors_about_urls_do_not_repeat_their_credentials() -> None:
    with pytest.raises(ForgeError) as caught:
        GitHubForge.repo_slug("https://x-access-token:s3cr3t@github.com/acme")
    assert "s3cr3t" not in str(caught.value)
    assert "https://***@github.com/acme" in str(caught.value)


def test_hosts_decide_what_is_handled() -> None:
    forge = GitHubForge(hosts=("GHE.example.com",))
    assert forge.handles("https://ghe.example.com/acme/repo.git")
    assert forge.handles("git@ghe.example.com:acme/repo.git")
    assert not forge.handles("https://github.com/acme/repo.git")


@pytest.mark.parametrize(
    ("api_url", "remote"),
    [
        ("https://api.github.com", "https://github.com/acme/repo.git"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com/acme/repo.git"),
        ("https://api.acme.ghe.com", "git@acme.ghe.com:acme/repo.git"),
    ],
)
def test_from_settings_handles_the_remotes_of_its_api(
    tmp_path: Path, api_url: str, remote: str
) -> None:
    settings = Settings(home=tmp_path, github_token=SecretStr(TOKEN), github_api_url=api_url)
    forge = GitHubForge.from_settings(settings)
    assert forge.handles(remote)
    assert forge.api_url == api_url
    assert TOKEN not in repr(forge)


def test_git_env_sends_the_token_as_basic_auth_scoped_to_the_origin() -> None:
    env = GitHubForge(token=TOKEN).git_env("https://github.com/acme/repo.git")
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
    name, _, value = env["GIT_CONFIG_VALUE_0"].partition(": ")
    assert name == "Authorization"
    scheme, _, credentials = value.partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"x-access-token:{TOKEN}"


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://user@github.com/acme/repo", "http.https://github.com/.extraheader"),
        ("https://github.com:443/acme/repo.git", "http.https://github.com:443/.extraheader"),
    ],
)
def test_git_env_key_is_the_origin_without_user(url: str, key: str) -> None:
    forge = GitHubForge(token=TOKEN, hosts=("github.com",))
    assert forge.git_env(url)["GIT_CONFIG_KEY_0"] == key


def test_git_env_over_http_only_to_a_loopback_host_on_the_configured_port() -> None:
    forge = GitHubForge(token=TOKEN, hosts=("127.0.0.1", "ghe.example.com"), port=9000)
    key = forge.git_env("http://127.0.0.1:9000/acme/repo.git")["GIT_CONFIG_KEY_0"]
    assert key == "http.http://127.0.0.1:9000/.extraheader"
    assert forge.git_env("http://127.0.0.1:9001/acme/repo.git") == {}  # another port
    assert forge.git_env("http://ghe.example.com:9000/acme/repo.git") == {}  # http, not loopback
    assert forge.git_env("https://ghe.example.com:9000/acme/repo.git") != {}


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:acme/repo.git",  # ssh: the operator's keys
        "ssh://git@github.com/acme/repo.git",
        "https://gitlab.com/acme/repo.git",  # never send the token to another host
        "https://github.com.evil.example/acme/repo.git",
        "http://github.com/acme/repo.git",  # nor in clear text
        "https://github.com:8443/acme/repo.git",  # nor to another port of the host
        "/tmp/x/remotes/acme/repo.git",
        "not a url at all:",
    ],
)
def test_git_env_is_empty_where_the_token_does_not_belong(url: str) -> None:
    assert GitHubForge(token=TOKEN).git_env(url) == {}


def test_from_settings_sends_the_token_to_the_port_of_its_api(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        github_token=SecretStr(TOKEN),
        github_api_url="https://ghe.example.com:8443/api/v3",
    )
    forge = GitHubForge.from_settings(settings)
    assert forge.git_env("https://ghe.example.com:8443/acme/repo.git") != {}
    assert forge.git_env("https://ghe.example.com/acme/repo.git") == {}


async def test_the_api_refuses_to_send_the_token_over_plain_http() -> None:
    forge = GitHubForge(token=TOKEN, api_url="http://ghe.example.com/api/v3")
    publication = Publication(
        session_id="s1",
        remote_url="https://ghe.example.com/acme/repo.git",
        branch="telecoder/s1",
        base="main",
        title="t",
        body="b",
    )
    with pytest.raises(ForgeError, match="not https"):
        await forge.publish(publication)


def test_git_env_is_empty_without_a_token() -> None:
    assert GitHubForge(token=None).git_env("https://github.com/acme/repo.git") == {}
    assert GitHubForge(token="").git_env("https://github.com/acme/repo.git") == {}


def test_parse_remote_reads_each_spelling() -> None:
    assert parse_remote("git@GitHub.com:acme/repo.git").host == "github.com"
    assert parse_remote("ssh://git@github.com:2222/acme/repo").port == 2222
    assert parse_remote("/srv/acme/repo.git").host is None
    assert parse_remote("https://[::1]:8080/acme/repo").origin == "https://[::1]:8080/"
    assert parse_remote("ssh://git@github.com/acme/repo").origin is None
