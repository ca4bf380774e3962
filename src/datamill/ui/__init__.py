"""The datamill web app (gradio): describe a dataset, preview, generate, download or push, view.

``datamill ui`` starts it; :func:`datamill.ui.app.launch` does the same from Python. The modules
by role: ``drafting`` (system prompt from a description), ``form`` (the form's values as one
typed object), ``builder`` (form → recipe → pipeline), ``jobs`` (runs in background threads with
live counters), ``handlers`` (plain functions behind every button), ``viewer`` (reading and
rendering output folders), ``hub`` (push), ``app`` (the gradio Blocks: layout and wiring). Only
``app`` imports gradio, and only when the app is built.
"""
