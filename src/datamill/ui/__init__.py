"""The datamill web app (gradio): describe a dataset, preview, generate, download or push, view.

``datamill ui`` starts it; :func:`datamill.ui.app.launch` does the same from Python. The modules
by role: ``drafting`` (system prompt from a description), ``builder`` (form → recipe → pipeline),
``jobs`` (runs in background threads with live counters), ``viewer`` (reading and rendering
output folders), ``hub`` (push), ``app`` (the gradio Blocks and its handlers). Only ``app``
imports gradio, and only when the app is built.
"""
