"""The haproxy engine: HAProxy moves the bytes, zonegate is its control plane.

model.py holds the names and state shapes the other modules share; render.py writes
haproxy.cfg from the topology (pure); reconcile.py turns (desired, reported) server
states into Runtime API commands (pure); desired.py turns zonegate's pool plans into
desired server states and HAProxy's stats into the /status document (pure);
runtime.py is the Runtime API client; process.py supervises the HAProxy master;
engine.py runs them together for `zonegate lb --engine haproxy`.
"""
