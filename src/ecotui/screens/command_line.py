"""The `:` command line (as in k9s and vim): jump anywhere by name, with completion.

`:clusters`, `:cluster NAME`, `:shells`, `:ledger`, `:logs NAME REPLICA`,
`:help`, `:q`. Tab (or →) completes the command, the cluster name and the
replica; the line under the input lists what matches. Commands live in one
registry (`COMMANDS`, `register`), so a view added later is one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.suggester import Suggester
from textual.widgets import Input, Static

from ecotui.host import OpenCluster, OpenLogs, OpenView, eco_host
from ecotui.text import visible
from ecotui.widgets.controls import EcoInput

# The app the commands run on: they read its model (`ecotui.host.EcoHost`) and
# ask it for views with the navigation messages.
Host = App[Any]


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]  # "cluster", "replica": what each argument completes to
    help: str
    run: Callable[[Host, list[str]], str | None]  # returns an error in words, or None
    aliases: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> None:
    """Add a command (and its aliases) to the command line."""
    COMMANDS[command.name] = command
    for alias in command.aliases:
        COMMANDS[alias] = command


def commands_for(app: Any) -> dict[str, Command]:
    """The commands the command line answers to."""
    return dict(COMMANDS)


# -- the commands ----------------------------------------------------------------


def _find_cluster(app: Host, ref: str) -> str | None:
    m = eco_host(app).model
    if ref in m.clusters:
        return ref
    for cid, c in m.clusters.items():
        if c.get("name") == ref:
            return cid
    return None


def _to_root(app: Host) -> None:
    while len(app.screen_stack) > 2:
        app.pop_screen()
    if len(app.screen_stack) == 2:
        app.pop_screen()


def _clusters(app: Host, args: list[str]) -> str | None:
    _to_root(app)
    return None


def _cluster(app: Host, args: list[str]) -> str | None:
    if not args:
        return "which cluster? :cluster NAME"
    cid = _find_cluster(app, args[0])
    if cid is None:
        return f"no cluster called {args[0]}"
    app.post_message(OpenCluster(cid))
    return None


def _logs(app: Host, args: list[str]) -> str | None:
    if len(args) < 1:
        return "which cluster and replica? :logs NAME REPLICA"
    cid = _find_cluster(app, args[0])
    if cid is None:
        return f"no cluster called {args[0]}"
    replicas = replica_names(app, cid)
    replica = args[1] if len(args) > 1 else (replicas[0] if replicas else None)
    if replica is None:
        return f"{args[0]} has no replicas"
    if replicas and replica not in replicas:
        return f"{args[0]} has no replica {replica} ({', '.join(replicas[:4])}…)"
    app.post_message(OpenLogs(cid, replica))
    return None


def _shells(app: Host, args: list[str]) -> str | None:
    action = getattr(app.screen, "action_shells", None)
    if action is None:
        return "shells open from a dashboard view"
    action()
    return None


def _ledger(app: Host, args: list[str]) -> str | None:
    app.post_message(OpenView("account"))
    return None


def _gpus(app: Host, args: list[str]) -> str | None:
    app.post_message(OpenView("gpus"))
    return None


def _help(app: Host, args: list[str]) -> str | None:
    app.post_message(OpenView("help"))
    return None


def _quit(app: Host, args: list[str]) -> str | None:
    app.exit()
    return None


for _cmd in (
    Command("clusters", (), "the clusters view", _clusters),
    Command("cluster", ("cluster",), "one cluster: replicas, GPUs, cost, events", _cluster),
    Command("logs", ("cluster", "replica"), "a replica's log", _logs),
    Command("shells", (), "the shells view", _shells),
    Command("ledger", (), "the account and its ledger", _ledger, aliases=("account",)),
    Command("gpus", (), "every GPU of the fleet, worst health first", _gpus),
    Command("help", (), "every key", _help),
    Command("q", (), "quit", _quit, aliases=("quit",)),
):
    register(_cmd)


def replica_names(app: Host, cid: str) -> list[str]:
    m = eco_host(app).model
    states = m.replicas.get(cid) or (m.clusters.get(cid) or {}).get("replica_states") or []
    names = [str(r.get("name")) for r in states if r.get("name")]
    if not names:
        c = m.clusters.get(cid) or {}
        names = [f"{c.get('name')}-{i}" for i in range(int(c.get("replicas") or 0))]
    return names


def completions(app: Host, value: str) -> tuple[str, list[str]]:
    """(the words before the one being typed, the candidates for it), in order."""
    words = value.split(" ")
    done, current = words[:-1], words[-1]
    cmds = commands_for(app)
    if not done:
        names = sorted({c for c in cmds})
        return "", [n for n in names if n.startswith(current)]
    cmd = cmds.get(done[0])
    if cmd is None or len(done) - 1 >= len(cmd.args):
        return " ".join(done), []
    kind = cmd.args[len(done) - 1]
    if kind == "cluster":
        pool = sorted(str(c.get("name")) for c in eco_host(app).model.clusters.values())
    else:
        cid = _find_cluster(app, done[1]) if len(done) > 1 else None
        pool = replica_names(app, cid) if cid else []
    return " ".join(done), [p for p in pool if p.startswith(current)]


class CommandSuggester(Suggester):
    def __init__(self, app: Host) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self._app = app

    async def get_suggestion(self, value: str) -> str | None:
        before, found = completions(self._app, value)
        if not found:
            return None
        return f"{before} {found[0]}".lstrip() if before else found[0]


class CommandInput(EcoInput):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("tab", "complete", "complete", show=False)]

    def action_complete(self) -> None:
        """Take the suggestion (the first match) and go on to the next word."""
        if self._suggestion and self._suggestion != self.value:
            self.value = self._suggestion
        if self.value and not self.value.endswith(" "):
            before, found = completions(self.app, self.value)
            if found and self.value.split(" ")[-1] in found:
                self.value += " "
        self.cursor_position = len(self.value)


class CommandLine(Vertical):
    """`:` + input, and a line of what matches; hidden until `:`."""

    DEFAULT_CSS = """
    CommandLine { dock: bottom; height: auto; display: none; background: $boost; }
    CommandLine.-shown { display: block; }
    CommandLine #cmd-row { height: 1; }
    CommandLine #cmd-colon { width: 2; padding: 0 0 0 1; text-style: bold; }
    CommandLine CommandInput { height: 1; width: 1fr; border: none; padding: 0;
                               background: $boost; }
    CommandLine #cmd-hint { height: 1; padding: 0 1; color: $foreground 70%; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="cmd-row"):
            yield Static(":", id="cmd-colon", markup=False)
            yield CommandInput(
                placeholder="command (tab completes, enter runs, esc closes)", id="cmd-input"
            )
        yield Static("", id="cmd-hint")

    @property
    def input(self) -> CommandInput:
        return self.query_one(CommandInput)

    def open(self) -> None:
        inp = self.input
        if inp.suggester is None:
            inp.suggester = CommandSuggester(self.app)
        inp.value = ""
        self.add_class("-shown")
        inp.focus()
        self._hint("")

    def close(self) -> bool:
        if not self.has_class("-shown"):
            return False
        self.remove_class("-shown")
        self.input.value = ""
        self.screen.focus_next()
        return True

    def _hint(self, value: str) -> None:
        before, found = completions(self.app, value)
        cmds = commands_for(self.app)
        if not before and not value:
            text = "  ".join(f":{n}" for n in sorted({c.name for c in cmds.values()}))
        elif found:
            text = "  ".join(found[:12]) + (
                f"  … {len(found) - 12} more" if len(found) > 12 else ""
            )
        else:
            cmd = cmds.get(value.split(" ")[0])
            text = (
                f":{cmd.name} {' '.join(a.upper() for a in cmd.args)}: {cmd.help}"
                if cmd
                else "no such command"
            )
        self.query_one("#cmd-hint", Static).update(Content(visible(text)))

    @on(Input.Changed, "#cmd-input")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self._hint(event.value)

    @on(Input.Submitted, "#cmd-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        run_command(self.app, event.value)
        self.close()


def run_command(app: Host, line: str) -> str | None:
    """Run one command line (without the `:`); an error is also shown as a toast."""
    words = line.strip().lstrip(":").split()
    if not words:
        return None
    cmd = commands_for(app).get(words[0])
    if cmd is None:
        error: str | None = f"no command :{words[0]} (try :help)"
    else:
        error = cmd.run(app, words[1:])
    if error:
        app.notify(visible(error), severity="warning")
    return error
