"""``keypin completion bash``: a bash completion script made from the parser itself (commands,
pinset/signer actions, every option), so it never goes out of date."""
from __future__ import annotations

import argparse

_TEMPLATE = """\
# keypin bash completion: eval "$(keypin completion bash)" (or put it in ~/.bash_completion)
_keypin() {
    local cur=${COMP_WORDS[COMP_CWORD]} cmd=${COMP_WORDS[1]} sub=${COMP_WORDS[2]} opts=""
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "@COMMANDS@ --help --version" -- "$cur"))
        return
    fi
    case "$cmd" in
@CASES@
    esac
    if [ -n "$opts" ] && { [ "${cur#-}" != "$cur" ] || [ "$COMP_CWORD" -eq 2 ]; }; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    fi
    if [ ${#COMPREPLY[@]} -eq 0 ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _keypin keypin
"""


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for act in p._actions:  # argparse keeps them here; there is no public accessor
        if isinstance(act, argparse._SubParsersAction):
            return dict(act.choices)
    return {}


def _options(p: argparse.ArgumentParser) -> str:
    return " ".join(s for act in p._actions for s in act.option_strings if s.startswith("--"))


def bash_script(parser: argparse.ArgumentParser) -> str:
    cmds = _subparsers(parser)
    cases = []
    for name, sp in cmds.items():
        actions = _subparsers(sp)
        if actions:
            inner = " ".join(f'{a}) opts="{_options(ap)}";;' for a, ap in actions.items())
            cases.append(f'        {name}) if [ "$COMP_CWORD" -eq 2 ]; then opts="{" ".join(actions)}"; '
                         f'else case "$sub" in {inner} esac; fi;;')
        else:
            cases.append(f'        {name}) opts="{_options(sp)}";;')
    return _TEMPLATE.replace("@COMMANDS@", " ".join(cmds)).replace("@CASES@", "\n".join(cases))


def cmd_completion(a) -> int:
    from ..cli import build_parser

    print(bash_script(build_parser()), end="")
    return 0


def args_completion(p):
    p.add_argument("shell", choices=["bash"], help="the shell (bash; zsh loads it with bashcompinit)")
