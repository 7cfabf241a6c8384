"""Power tools for replica work: `run` everywhere (folded), `shell`, `replay`,
`port-forward` and `cp`. Each command lives in its own module; `add_parsers`
and `COMMANDS` plug them into `ecotui.cli`."""
