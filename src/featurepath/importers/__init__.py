"""Importers: logs written by other tools, turned into featurepath's tables.

``exp2_jsonl`` reads the original gambling study's Exp2 JSONL logs (one patched trial a line),
re-parses every response with the slot-machine task's strict parser and runs the word and
stop-rate analyses on them. Importers sit beside the pipeline: they may use a task and the
analysis stages, and nothing below them imports them.
"""
