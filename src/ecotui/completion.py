"""Shell completion for `ecotui`, written from the argument parser itself.

`ecotui completion bash|zsh|fish` prints a script that completes the
commands, each command's options and the fixed choices of its arguments.
Made from `build_parser()`, so a new command or option completes without
touching this module. Install:

    bash:  eval "$(ecotui completion bash)"          (e.g. in ~/.bashrc)
    zsh:   eval "$(ecotui completion zsh)"           (after compinit)
    fish:  ecotui completion fish > ~/.config/fish/completions/ecotui.fish
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass
class Command:
    name: str
    help: str
    options: list[tuple[str, str]] = field(default_factory=list)  # (--long or -s, help)
    choices: list[str] = field(default_factory=list)  # fixed values of its positionals


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    out = []
    for action in parser._actions:
        for opt in action.option_strings:
            out.append((opt, (action.help or "").replace("\n", " ")))
    return out


def describe(parser: argparse.ArgumentParser) -> tuple[list[tuple[str, str]], list[Command]]:
    """The top-level options and the commands of `parser`."""
    commands: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                choices = [
                    str(c)
                    for a in sub._actions
                    if not a.option_strings and a.choices
                    for c in a.choices
                ]
                commands.append(Command(name, helps.get(name, ""), _options(sub), choices))
    return _options(parser), commands


def _quote_sq(text: str) -> str:
    return text.replace("'", "'\\''")


def bash(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    cases = []
    for c in commands:
        words = " ".join([o for o, _ in c.options] + c.choices)
        cases.append(f"        {c.name}) opts='{_quote_sq(words)}' ;;")
    names = " ".join(c.name for c in commands)
    top_words = " ".join(o for o, _ in top)
    return f"""# bash completion for ecotui (ecotui completion bash)
_ecotui() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="" i opts
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --api|--refresh) ((i++)) ;;
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W '{names} {top_words}' -- "$cur"))
        return
    fi
    case "$cmd" in
{chr(10).join(cases)}
        *) opts='' ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -o default -F _ecotui ecotui
"""


def zsh(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    described = " ".join(
        f"'{_quote_sq(c.name)}:{_quote_sq(c.help.replace(':', ' -'))}'" for c in commands
    )
    cases = []
    for c in commands:
        words = " ".join(f"'{_quote_sq(w)}'" for w in [o for o, _ in c.options] + c.choices)
        cases.append(f"        {c.name}) compadd -- {words} ;;")
    top_words = " ".join(f"'{o}'" for o, _ in top)
    return f"""#compdef ecotui
# zsh completion for ecotui (ecotui completion zsh)
_ecotui() {{
    local -a cmds
    cmds=({described})
    local cmd="" i
    for ((i = 2; i < CURRENT; i++)); do
        case "$words[i]" in
            --api|--refresh) ((i++)) ;;
            -*) ;;
            *) cmd="$words[i]"; break ;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        _describe 'command' cmds
        compadd -- {top_words}
        return
    fi
    case "$cmd" in
{chr(10).join(cases)}
    esac
    _files
}}
compdef _ecotui ecotui
"""


def fish(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    names = " ".join(c.name for c in commands)
    lines = ["# fish completion for ecotui (ecotui completion fish)", "complete -c ecotui -f"]
    for opt, help_ in top:
        lines.append(
            f"complete -c ecotui -n 'not __fish_seen_subcommand_from {names}' "
            f"{_fish_opt(opt)} -d '{_quote_fish(help_)}'"
        )
    for c in commands:
        lines.append(
            f"complete -c ecotui -n 'not __fish_seen_subcommand_from {names}' "
            f"-a {c.name} -d '{_quote_fish(c.help)}'"
        )
        for opt, help_ in c.options:
            lines.append(
                f"complete -c ecotui -n '__fish_seen_subcommand_from {c.name}' "
                f"{_fish_opt(opt)} -d '{_quote_fish(help_)}'"
            )
        if c.choices:
            lines.append(
                f"complete -c ecotui -n '__fish_seen_subcommand_from {c.name}' "
                f"-a '{' '.join(c.choices)}'"
            )
    return "\n".join(lines) + "\n"


def _fish_opt(opt: str) -> str:
    return f"-l {opt[2:]}" if opt.startswith("--") else f"-s {opt[1:]}"


def _quote_fish(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](parser)
