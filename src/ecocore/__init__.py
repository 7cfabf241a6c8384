"""Pure rules shared by the dashboard and the backend: no IO, no framework imports."""
