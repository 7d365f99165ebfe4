"""Seeded random configurations through `gohub -t`: every key's environment
variable set to values in and out of its range and of other types, and the
shipped configs/gohub.yaml edited at random (lines dropped, doubled,
re-indented; anchors, aliases, tags, flow collections, tabs, long and
deep values put in). Each run must end with 0, or 1 and a reason that
names the variable or the file; never a crash, a hang or a sanitizer
report (the ASan pass runs this too). A failure names its trial."""

import random
import re

from gohub_helpers import CONFIG
from test_cli import out, run

ENV_TRIALS = 150
YAML_TRIALS = 150


def keys(gohub_bin):
    """(key, env names, type) of every configuration key, from --config-keys."""
    p = run(gohub_bin, "--config-keys")
    assert p.returncode == 0, out(p)
    rows = []
    for line in p.stdout.decode().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            envs = re.findall(r"`([A-Z0-9_]+)`", cells[1])
            rows.append((cells[0].strip("`"), envs, cells[2]))
    assert len(rows) > 40, rows
    return rows


def env_value(rng, typ):
    common = ["", " ", "x", "-1", "0", "1e999", "99999999999999999999999", "é", "a" * 5000,
              "[", "]", "{}", "null", "true"]
    if typ.startswith("int"):
        lo, hi = (int(x) for x in re.findall(r"-?\d+", typ)[:2])
        return str(rng.choice([lo, hi, lo - 1, hi + 1, (lo + hi) // 2])) if rng.random() < 0.5 \
            else rng.choice(common + ["1.5", "0x10", " 5", "5 ", "+3"])
    if typ.startswith("duration"):
        return rng.choice(["10s", "0s", "100ms", "1h", "-1s", "10", "s", "1.5s", "1e9h",
                           "99999999999999999999ms", "5m3s", "10 s", "10S"] + common)
    if typ == "bool":
        return rng.choice(["true", "false", "yes", "no", "1", "0", "on", "maybe"] + common)
    if typ.startswith("list"):
        return rng.choice(["[a,b]", "a,b", "[a, b, ]", "[", "[\"x\"]", ",", "a" * 3000] + common)
    return rng.choice(["127.0.0.1:0", ":0", "host:99999", "[::1]:0", "a b", "/tmp/nope"] + common)


def check(p, where, names):
    text = out(p)
    assert p.returncode in (0, 1), f"{where}: exit {p.returncode}\n{text[-3000:]}"
    assert "Sanitizer" not in text and "runtime error" not in text, f"{where}:\n{text[-3000:]}"
    if p.returncode == 1:
        assert any(n in text for n in names), f"{where}: reason names none of {names}: {text!r}"


def test_random_environment_values_are_checked(gohub_bin):
    rng = random.Random(5)
    rows = [r for r in keys(gohub_bin) if r[1]]
    outcomes = set()
    for t in range(ENV_TRIALS):
        env, names = {}, []
        for key, envs, typ in rng.sample(rows, rng.randint(1, 3)):
            name = rng.choice(envs)
            env[name] = env_value(rng, typ)
            names += [name, key]
        # a port in use or a path that does not exist is not the point here
        env.setdefault("GOHUB_SERVER_ADDR", "127.0.0.1:0")
        p = run(gohub_bin, "-t", "-c", str(CONFIG), env=env, timeout=20)
        check(p, f"trial {t} env {env!r:.400}", names)
        outcomes.add(p.returncode)
    assert outcomes == {0, 1}, outcomes


YAML_BITS = ["&a 1", "*a", "*nope", "!!binary aGk=", "!!str", "{", "}", "[", "]", "- x", ": :",
             "\t", "~", "? x", "|", ">", "'", '"', "%YAML 1.1", "---", "...", "x" * 20000,
             "[" * 200 + "]" * 200, "{a: {b: {c: [1, {d: 2}]}}}", "0x1F", "1e999", ".inf",
             "-.nan", "é", "\u0085", "#", "a: 1\na: 2"]


def mutate(rng, lines):
    lines = list(lines)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        op = rng.random()
        if op < 0.2:
            del lines[i]
        elif op < 0.35:
            lines.insert(i, lines[i])
        elif op < 0.5:
            lines[i] = " " * rng.choice([0, 1, 3, 4, 8]) + lines[i].lstrip()
        elif op < 0.8 and ":" in lines[i]:
            k = lines[i].split(":", 1)[0]
            lines[i] = f"{k}: {rng.choice(YAML_BITS)}"
        else:
            lines.insert(i, rng.choice(YAML_BITS))
    return lines


def test_random_edits_of_the_config_file_are_checked(gohub_bin, tmp_path):
    rng = random.Random(6)
    base = CONFIG.read_text().splitlines()
    names = [k for k, _, _ in keys(gohub_bin)]
    f = tmp_path / "fuzzed.yaml"
    outcomes = set()
    for t in range(YAML_TRIALS):
        f.write_text("\n".join(mutate(rng, base)) + "\n")
        p = run(gohub_bin, "-t", "-c", str(f), env={"GOHUB_SERVER_ADDR": "127.0.0.1:0"},
                timeout=20)
        # the file (file:line) for what the parser refuses, the key for a
        # value checked later (a lua.path that is no directory)
        check(p, f"trial {t}:\n{f.read_text()[:3000]}", [str(f)] + names)
        outcomes.add(p.returncode)
    assert outcomes == {0, 1}, outcomes
