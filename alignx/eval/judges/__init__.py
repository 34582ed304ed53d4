"""Judges behind one interface, chosen by name: offline, api, hf."""
