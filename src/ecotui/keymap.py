"""The dashboard's one key map: bindings for every screen, the help screen and the palette.

Each screen builds its BINDINGS from these lists, the help screen prints them
by scope, the key bar and the command palette read the screen's active
bindings, so a key is documented wherever it works and nowhere else.

A leaf module: it imports only `textual.binding`, so every layer (app,
screens, dialogs, widgets) may import it.
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

MOVE = Binding.Group("move")
TOP = Binding.Group("top/bottom")
PAGE = Binding.Group("page")

GLOBAL: list[Binding] = [
    Binding("question_mark", "app.help", "help", key_display="?"),
    Binding("colon", "app.command_line", "command", key_display=":"),
    Binding("q", "app.quit", "quit"),
    Binding("a", "app.account", "account"),
    Binding("ctrl+p", "app.command_palette", "palette", key_display="^p"),
    Binding("T", "app.toggle_theme", "theme"),
    Binding("H", "app.show_gpus", "fleet health"),
    Binding("escape", "app.back", "back", key_display="esc"),
]

MOVEMENT: list[Binding] = [
    Binding("j", "cursor_down", "down", group=MOVE),
    Binding("k", "cursor_up", "up", group=MOVE),
    Binding("down", "cursor_down", "down", show=False),
    Binding("up", "cursor_up", "up", show=False),
    Binding("g", "cursor_top", "top", group=TOP),
    Binding("G", "cursor_bottom", "bottom", group=TOP),
    Binding("home", "cursor_top", "top", show=False),
    Binding("end", "cursor_bottom", "bottom", show=False),
    Binding("ctrl+f", "page_down", "page down", key_display="^f", group=PAGE),
    Binding("ctrl+b", "page_up", "page up", key_display="^b", group=PAGE),
    Binding("pagedown", "page_down", "page down", show=False),
    Binding("pageup", "page_up", "page up", show=False),
]

CLUSTERS_VIEW: list[Binding] = [
    Binding("enter", "open", "open", key_display="⏎"),
    Binding("slash", "filter", "filter", key_display="/"),
    Binding("o", "next_sort", "sort"),
    Binding("O", "reverse_sort", "reverse"),
    Binding("m", "group", "group"),
]

CLUSTER_VIEW: list[Binding] = [
    Binding("slash", "filter", "filter", key_display="/"),
    Binding("1", "panel_gpus", "GPUs"),
    Binding("2", "panel_cost", "cost"),
    Binding("3", "panel_events", "events"),
]

# Actions on a cluster (the clusters view's current row, or the cluster view's cluster).
ON_CLUSTER: list[Binding] = [
    Binding("n", "launch", "launch"),
    Binding("plus", "scale", "scale", key_display="+"),
    Binding("e", "extend", "extend"),
    Binding("u", "endpoint", "endpoint"),
    Binding("R", "restart", "restart"),
    Binding("p", "stop", "stop"),
    Binding("P", "resume", "resume"),
    Binding("D", "terminate", "terminate"),
    Binding("s", "shell", "shell"),
    Binding("l", "logs", "logs"),
    Binding("N", "nvidia_smi", "nvidia-smi"),
    Binding("exclamation_mark", "run_everywhere", "run everywhere", key_display="!"),
    Binding("F", "port_forward", "port-forward"),
    Binding("W", "forwards", "forwards"),
    Binding("greater_than_sign", "upload", "upload", key_display=">"),
    Binding("less_than_sign", "download", "download", key_display="<"),
    Binding("S", "shells", "shells"),
]

LOGS_VIEW: list[Binding] = [
    Binding("f", "toggle_follow", "follow/pause"),
    Binding("space", "toggle_follow", "follow/pause", show=False),
    Binding("slash", "search", "search", key_display="/"),
    Binding("n", "next_match", "next match"),
    Binding("N", "previous_match", "prev match"),
    Binding("v", "toggle_previous", "previous run"),
    Binding("right_square_bracket", "next_replica", "next replica", key_display="]"),
    Binding("left_square_bracket", "previous_replica", "prev replica", key_display="["),
]

ACCOUNT_VIEW: list[Binding] = [
    Binding("slash", "filter", "filter by cluster", key_display="/"),
    Binding("right_square_bracket", "older", "older page", key_display="]"),
    Binding("left_square_bracket", "newer", "newer page", key_display="["),
    Binding("x", "export", "export CSV"),
    Binding("r", "reload", "reload"),
]

# The terminal widget gives the keys back to the dashboard with this key.
RELEASE_KEY = "ctrl+right_square_bracket"
RELEASE_KEY_DISPLAY = "ctrl+]"

TERMINAL: list[BindingType] = [
    Binding(
        RELEASE_KEY, "release", "dashboard keys", key_display=RELEASE_KEY_DISPLAY, priority=True
    ),
]

# The shells view (keys while no terminal has focus).
SHELLS_VIEW: list[Binding] = [
    Binding("enter", "focus_terminal", "type in shell", key_display="⏎"),
    Binding("o", "open_picker", "open shell"),
    Binding("right_square_bracket", "next_tab", "next tab", key_display="]"),
    Binding("left_square_bracket", "previous_tab", "prev tab", key_display="["),
    Binding("v", "toggle_split", "split"),
    Binding("w", "other_pane", "other pane"),
    Binding("b", "toggle_broadcast", "broadcast"),
    Binding("d", "detach", "detach"),
    Binding("x", "end_session", "end session"),
    Binding("slash", "search", "search", key_display="/"),
    Binding("n", "next_match", "older match"),
    Binding("N", "previous_match", "newer match"),
    Binding("y", "copy_selection", "copy selection"),
    Binding("Y", "copy_screen", "copy screen"),
    Binding("pageup", "page_up", "scroll back", key_display="pgup"),
    Binding("pagedown", "page_down", "scroll fwd", key_display="pgdn"),
    Binding("ctrl+b", "page_up", "scroll back", show=False),
    Binding("ctrl+f", "page_down", "scroll fwd", show=False),
    Binding("g", "scroll_top", "scrollback top"),
    Binding("G", "scroll_bottom", "live"),
    Binding("r", "toggle_record", "record"),
    Binding("e", "extend", "extend"),
    Binding("P", "recordings", "recordings"),
]

GPU_COMPARE_VIEW: list[Binding] = [
    Binding("r", "rerun", "run again"),
    Binding("f", "folded", "folded diff"),
]

RUN_VIEW: list[Binding] = [
    Binding("r", "rerun", "run again"),
    Binding("exclamation_mark", "ask", "other command", key_display="!"),
]

FORWARDS_VIEW: list[Binding] = [
    Binding("x", "end", "end forward"),
]

RECORDINGS_VIEW: list[Binding] = [
    Binding("enter", "play", "play", key_display="⏎"),
    Binding("plus", "faster", "faster", key_display="+"),
    Binding("minus", "slower", "slower", key_display="-"),
    Binding("r", "reload", "reload list"),
]

GPUS_VIEW: list[Binding] = [
    Binding("enter", "open_gpu", "GPU detail", key_display="⏎"),
    Binding("R", "restart", "restart replica"),
    Binding("slash", "filter", "filter", key_display="/"),
    Binding("o", "next_sort", "sort"),
    Binding("O", "reverse_sort", "reverse"),
    Binding("r", "reload", "reload"),
]

GPU_DETAIL_VIEW: list[Binding] = [
    Binding("R", "restart", "restart replica"),
    Binding("r", "reload", "reload"),
]

# The cluster view's key to the worst GPU's detail.
CLUSTER_GPU: list[Binding] = [
    Binding("i", "gpu_detail", "GPU detail"),
]

# Every scope, in the order the help screen prints them.
SCOPES: list[tuple[str, list[Binding]]] = [
    ("Everywhere", GLOBAL),
    ("Movement (tables, lists, logs)", MOVEMENT),
    ("Clusters view", CLUSTERS_VIEW),
    ("Cluster view", CLUSTER_VIEW + CLUSTER_GPU),
    ("On a cluster (clusters view row or cluster view)", ON_CLUSTER),
    ("Logs view", LOGS_VIEW),
    ("Account view", ACCOUNT_VIEW),
    ("Shells view", SHELLS_VIEW),
    ("nvidia-smi side by side", GPU_COMPARE_VIEW),
    ("Run everywhere (folded)", RUN_VIEW),
    ("Port-forwards list", FORWARDS_VIEW),
    ("Recordings", RECORDINGS_VIEW),
    ("GPUs view (H)", GPUS_VIEW),
    ("GPU detail", GPU_DETAIL_VIEW),
]

TERMINAL_NOTE = (
    f"Terminal: every key goes to the shell except {RELEASE_KEY_DISPLAY}, which returns "
    "focus to the dashboard."
)


def key_label(b: Binding) -> str:
    if b.key_display:
        return b.key_display
    return {
        "down": "↓",
        "up": "↑",
        "home": "home",
        "end": "end",
        "pagedown": "pgdn",
        "pageup": "pgup",
        "space": "space",
    }.get(b.key, b.key)
