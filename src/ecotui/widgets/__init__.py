"""The dashboard's widgets (each with its CSS beside it)."""

from ecotui.widgets.alert_bar import AlertBar
from ecotui.widgets.cost_panel import CostPanel
from ecotui.widgets.fleet_table import Column, FleetTable
from ecotui.widgets.gpu_panel import GpuPanel
from ecotui.widgets.keybar import KeyBar
from ecotui.widgets.log_view import LogView
from ecotui.widgets.replicas_table import ReplicasTable
from ecotui.widgets.status_bar import StatusBar

__all__ = [
    "AlertBar",
    "Column",
    "CostPanel",
    "FleetTable",
    "GpuPanel",
    "KeyBar",
    "LogView",
    "ReplicasTable",
    "StatusBar",
]
