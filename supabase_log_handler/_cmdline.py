"""Masking secrets in a command line before it is recorded (``supabase-log run``'s ``metadata.command``).

A command line carries secrets in shapes that text scanning alone misses, so each
argument is read as the program would read it. What is masked (as ``[REDACTED]``):

* the value of a flag whose name is secret-like, by the key rules of ``_redact``
  (``--password X``, ``--password=X``, ``--db-password X``, ``--token=X``,
  ``-apikey X``, ``-Dapp.password=X``), also joined words such as ``--dbpassword``;
  never for ``--no-...`` flags, and the next argument only when it is not a flag
  itself (``psql --password`` takes no value);
* short flags whose meaning is known: per program (``mysql -pX``, ``sshpass -p X``,
  ``redis-cli -a X``, ``docker login -p X`` ...: ``_SHORT_FLAGS``), and any flag the
  caller names (``SUPABASE_LOG_REDACT_KEYS=-p`` in the wrapper), for every program;
* ``NAME=value`` arguments and environment assignments with a secret-like name
  (``PGPASSWORD=x``, ``env MYSQL_PWD=x``, ``api_key=x``);
* the password of a URL (``postgresql://user:pw@host``, ``redis://:pw@host``);
* inside an argument that is itself a command line (``bash -c '...'``,
  ``ssh host '...'``), the same rules, word by word, the rest of the text kept;
* then every secret shape and literal the ``Redactor`` knows (JWTs, the key).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from ._redact import MASK, Redactor

# Programs whose short flags carry a secret (a value after the flag, or joined to it).
_SHORT_FLAGS: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "mysql",
            "mysqldump",
            "mysqladmin",
            "mysqlimport",
            "mysqlcheck",
            "mysqlshow",
            "mysqlpump",
            "mariadb",
            "mariadb-dump",
            "mariadb-admin",
        ),
        frozenset({"-p"}),
    ),
    **dict.fromkeys(
        ("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport"),
        frozenset({"-p"}),
    ),
    **dict.fromkeys(("docker", "podman", "nerdctl", "helm", "oras", "az"), frozenset({"-p"})),
    **dict.fromkeys(("7z", "7za", "7zr", "rar", "unrar"), frozenset({"-p"})),
    **dict.fromkeys(("zip", "unzip", "sqlcmd", "bcp"), frozenset({"-P"})),
    **dict.fromkeys(
        ("ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapwhoami", "ldappasswd"),
        frozenset({"-w"}),
    ),
    "sshpass": frozenset({"-p"}),
    "redis-cli": frozenset({"-a"}),
    "curl": frozenset({"-u", "-U", "--user", "--proxy-user"}),
    "smbclient": frozenset({"-U", "--user"}),
    "openssl": frozenset({"-k", "-pass", "-passin", "-passout"}),
}
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$", re.DOTALL)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@/\s]+)(@)", re.IGNORECASE)
_SHELL_BREAK = frozenset(";&|()<>")
_MAX_DEPTH = 3  # command lines inside command lines


def _program(token: str) -> str:
    name = token.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return name[:-4] if name.endswith(".exe") else name


def secret_name(name: str, redactor: Redactor) -> bool:
    """Is ``name`` (of a flag or a variable) one whose value is a secret?

    The Redactor's key rules, applied to the name and to each of its tails, by words
    (``AWS_SECRET_ACCESS_KEY`` ends in ``access_key``) and by letters (``PGPASSWORD``,
    ``dbpassword``). ``no-...`` names never count.
    """
    norm = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not norm or norm.startswith("no_"):
        return False
    words = norm.split("_")
    if any(redactor.is_sensitive_key("_".join(words[i:])) for i in range(len(words))):
        return True  # "aws_secret_access_key" ends in the sensitive key "access_key"
    compact = norm.replace("_", "")
    return any(redactor.is_sensitive_key(compact[i:]) for i in range(1, len(compact) - 2))


class _Masker:
    def __init__(self, redactor: Redactor, flags: Iterable[str]) -> None:
        self.redactor = redactor
        self.flags = frozenset(f.strip() for f in flags if f.strip().startswith("-"))

    def tokens(self, argv: list[str], depth: int) -> list[str]:
        out = list(argv)
        short = self.flags
        takes_value = False
        for i, token in enumerate(argv):
            if takes_value:
                takes_value = False
                if not (token.startswith("-") and len(token) > 1):  # else a flag without a value
                    out[i] = MASK
                    continue
            if not token.startswith("-") and _program(token) in _SHORT_FLAGS:
                short = self.flags | _SHORT_FLAGS[_program(token)]
            masked, takes_value = self._token(token, argv[i - 1] if i else "", short, depth)
            out[i] = self.redactor.text(_URL_PASSWORD.sub(r"\1" + MASK + r"\3", masked))
        return out

    def _token(
        self, token: str, previous: str, short: frozenset[str], depth: int
    ) -> tuple[str, bool]:
        """The token masked, and whether the next token is this flag's secret value."""
        if token.startswith("-") and len(token) > 1 and token != "--":
            return self._flag(token, short)
        match = _ASSIGNMENT.match(token)
        name = match.group(1) if match and secret_name(match.group(1), self.redactor) else None
        # ``NAME=a b`` is one value, unless it is the script of ``sh -c`` (``PGPASSWORD=x psql ...``).
        if name is not None and not _script_flag(previous):
            return f"{name}={MASK}", False
        if depth < _MAX_DEPTH and _is_script(token):
            return self.script(token, depth + 1), False
        if name is not None:
            return f"{name}={MASK}", False
        return token, False

    def _flag(self, token: str, short: frozenset[str]) -> tuple[str, bool]:
        if token in short:
            return token, True
        name, eq, _ = token.lstrip("-").partition("=")
        dashes = token[: len(token) - len(token.lstrip("-"))]
        if eq and (f"{dashes}{name}" in short or secret_name(name, self.redactor)):
            return f"{dashes}{name}={MASK}", False
        joined = token[:2]
        if dashes == "-" and joined in short and len(token) > 2:  # mysql -pSECRET
            return joined + MASK, False
        if not eq and (dashes == "--" or len(name) > 1) and secret_name(name, self.redactor):
            return token, True
        return token, False

    def script(self, text: str, depth: int) -> str:
        """``text`` read as a shell command line: secret words replaced, the rest kept as written."""
        words = _shell_words(text)
        if not words:
            return text
        masked = self.tokens([w for _, _, w in words], depth)
        for (start, end, word), new in reversed(list(zip(words, masked, strict=True))):
            if new != word:
                text = text[:start] + (shlex.quote(new) if _is_script(new) else new) + text[end:]
        return text


def _script_flag(flag: str) -> bool:
    """``-c``, ``-lc``, ``-ec``, ``--command``: the next argument is a command line."""
    return flag == "--command" or (len(flag) > 1 and flag[0] == "-" != flag[1] and flag[-1] == "c")


def _is_script(token: str) -> bool:
    return any(c.isspace() or c in _SHELL_BREAK for c in token)


def _shell_words(text: str) -> list[tuple[int, int, str]]:
    """(start, end, value) of each word of a shell command line (quotes and escapes removed)."""
    words: list[tuple[int, int, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace() or text[i] in _SHELL_BREAK:
            i += 1
            continue
        start, value = i, []
        while i < n and not (text[i].isspace() or text[i] in _SHELL_BREAK):
            c = text[i]
            if c == "'":
                end = text.find("'", i + 1)
                end = n if end < 0 else end
                value.append(text[i + 1 : end])
                i = end + 1
            elif c == '"':
                i += 1
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        i += 1
                    value.append(text[i])
                    i += 1
                i += 1
            elif c == "\\" and i + 1 < n:
                value.append(text[i + 1])
                i += 2
            else:
                value.append(c)
                i += 1
        words.append((start, min(i, n), "".join(value)))
    return words


def mask_argv(argv: list[str], redactor: Redactor, *, flags: Iterable[str] = ()) -> list[str]:
    """``argv`` with every secret argument (or the secret part of one) replaced by ``[REDACTED]``.

    ``flags`` are more flags (``-p``, ``-k``) whose value is a secret in every program.
    With a disabled ``redactor`` (``SUPABASE_LOG_REDACT=false``) nothing is masked.
    """
    if not redactor.enabled:
        return list(argv)
    try:
        return _Masker(redactor, flags).tokens(list(argv), 0)
    except Exception:  # never keep a run from being recorded; show nothing rather than a secret
        return [argv[0], MASK] if argv else []
