"""The crate's architecture rules, checked on the source: no import circle among the root crate's
modules, no module importing from a layer above its own, no file of the root crate using glommio
(the runtime lives behind the `shards` crate), and the connection shell not decoding packets.

The module graph is read from the text: every `crate::…` / `super::…` path (in `use` lists too)
is resolved to the longest module (file) it names; a parent module naming its own children is not
an edge (declaring and re-exporting them is what a parent does). Comments are ignored.

Layers, bottom to top (a module may import from its own layer and the ones below):
protocol, config | persist, plugins, transport | broker, client, bridge, cluster | server | the crate root
(lib.rs).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

LAYERS = {
    "protocol": 0,
    "config": 0,
    "persist": 1,
    "plugins": 1,
    "transport": 1,
    "broker": 2,
    "client": 2,
    "bridge": 2,
    "cluster": 2,
    "server": 3,
}

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"use\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def modules(src: Path) -> dict[tuple[str, ...], Path]:
    """Module path -> file, for every `.rs` file under `src` (binaries excluded)."""
    found = {}
    for file in src.rglob("*.rs"):
        parts = list(file.relative_to(src).with_suffix("").parts)
        if parts[0] == "bin":
            continue
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        found[tuple(parts)] = file
    return found


def import_graph(src: Path) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    mods = modules(src)

    def resolve(path: list[str]) -> tuple[str, ...] | None:
        for end in range(len(path), 0, -1):
            if tuple(path[:end]) in mods:
                return tuple(path[:end])
        return None

    edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in mods}
    for module, file in mods.items():
        text = re.sub(r"//[^\n]*", "", file.read_text())

        def absolute(kind: str, segs: list[str]) -> list[str]:
            if kind == "crate":
                return segs
            base = list(module)[:-1]
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
            return base + segs

        paths = []
        for group in USE_GROUP.finditer(text):
            kind = group.group(1)
            prefix = [s for s in group.group(2).split("::") if s]
            for item in re.split(r"[,{}\s]+", group.group(3)):
                if item == "self":
                    paths.append(absolute(kind, prefix))
                elif item and item != "*":
                    paths.append(absolute(kind, prefix + [s for s in item.split("::") if s]))
        for path in PATH.finditer(text):
            paths.append(absolute(path.group(1), [s for s in path.group(2).split("::") if s]))
        for path in paths:
            target = resolve(path)
            if target is None or target == module or target[: len(module)] == module:
                continue
            edges[module].add(target)
    return edges


def cycles(edges: dict[tuple[str, ...], set[tuple[str, ...]]]) -> list[list[tuple[str, ...]]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    found = []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def layer_violations(edges) -> list[str]:
    bad = []
    for source, targets in edges.items():
        if not source or source[0] not in LAYERS:
            continue
        for target in targets:
            if target and target[0] in LAYERS and LAYERS[target[0]] > LAYERS[source[0]]:
                bad.append(f"{'::'.join(source)} -> {'::'.join(target)}")
    return sorted(bad)


def describe(component, edges) -> str:
    inside = set(component)
    return "; ".join(
        f"{'::'.join(a)} -> {'::'.join(b)}" for a in component for b in sorted(edges[a]) if b in inside
    )


def test_no_import_cycle_among_the_crates_modules():
    edges = import_graph(REPO_ROOT / "src")
    assert [describe(c, edges) for c in cycles(edges)] == []


def test_no_module_imports_from_a_layer_above_it():
    assert layer_violations(import_graph(REPO_ROOT / "src")) == []


def test_no_file_of_the_root_crate_names_glommio():
    """The root crate reaches the runtime only through `shards::rt`: no `glommio::` path, no
    `use glommio`, and no glommio dependency. The word itself stays where it is the name of a
    runtime a user chooses (`runtime: glommio`)."""
    code = re.compile(r"\bglommio\s*::|\buse\s+glommio\b|\bextern\s+crate\s+glommio\b")
    naming = [
        str(f.relative_to(REPO_ROOT))
        for f in sorted((REPO_ROOT / "src").rglob("*.rs"))
        if code.search(f.read_text())
    ]
    assert naming == []
    manifest = (REPO_ROOT / "Cargo.toml").read_text()
    dependencies = manifest.split("[dependencies]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^\s*glommio\s*=", dependencies, re.M)


# The connection's message path in the shell: bytes in, the core's verdicts out. None of these may
# name the codec: decoding and every MQTT decision belong to `broker/handlers/`.
SHELL_MESSAGE_PATH = [
    "accept_loop",
    "connection_task",
    "read_loop",
    "write_side",
    "shard",
    "shard_tasks",
    "bus_retry",
]


def test_the_shell_message_path_never_names_the_codec():
    edges = import_graph(REPO_ROOT / "src")
    for name in SHELL_MESSAGE_PATH:
        module = ("server", name)
        assert module in edges, f"src/server/{name}.rs is gone: update SHELL_MESSAGE_PATH"
        assert sorted("::".join(t) for t in edges[module] if t[0] == "protocol") == [], name


def test_the_checks_find_a_cycle_and_a_layer_violation(tmp_path):
    """The checker itself: a made-up crate with one circle and one upward import."""
    src = tmp_path / "src"
    (src / "plugins").mkdir(parents=True)
    (src / "broker").mkdir()
    (src / "lib.rs").write_text("pub mod broker;\npub mod plugins;\n")
    (src / "plugins" / "mod.rs").write_text("use crate::broker::Message; // upward\n")
    (src / "broker" / "mod.rs").write_text("mod a;\nmod b;\npub struct Message;\n")
    (src / "broker" / "a.rs").write_text("use super::b::B;\npub struct A;\n")
    (src / "broker" / "b.rs").write_text("use super::{a::A, Message};\npub struct B;\n")
    edges = import_graph(src)
    assert [describe(c, edges) for c in cycles(edges)] == [
        "broker::a -> broker::b; broker::b -> broker::a"
    ]
    assert layer_violations(edges) == ["plugins -> broker"]
