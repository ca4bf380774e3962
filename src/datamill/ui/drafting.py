"""Drafting a system prompt from a plain description of the dataset a person wants.

Magpie (Xu et al., arXiv:2406.08464) and SelfInstruct (Wang et al., arXiv:2212.10560) are steered
by describing *who the users are and what they ask* ("You are an assistant that helps users with
X"), not by asking the model to "generate X" (smol-course ch. 6, Magpie section). Two drafters:

- :func:`template_prompt` — deterministic: strips "a dataset of", "generate", … from the
  description and puts the rest, quoted, after a colon in fixed sentences about the users. The
  description is never spliced into a sentence of its own, so the prompt reads as English for any
  description: a noun phrase ("bike repair"), a clause ("questions a beginner asks about X"), an
  imperative ("help me write cover letters"), one word or a paragraph. The app's default.
- :func:`draft_with_model` — asks the chosen model (through the same engine and call cache as
  every run) to write one; its answer is cleaned and checked, and the template is used when it is
  unusable (a 135M model often rambles), saying so.

Deliberately not here: the gradio widgets (``ui.app``), running datasets (``ui.jobs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

#: Leading phrases that describe the *dataset* rather than the *users*; removed from the topic.
#: A noun ("data", "questions") is peeled only with the preposition that ties it to the topic
#: ("questions about X"), so "questions a beginner asks …" and "data science …" stay whole.
_LEADS = [
    r"(?:please\s+)?(?:i\s+(?:want|need|would like)(?:\s+to\s+(?:make|build|create|generate|have))?)",
    r"(?:can you\s+|could you\s+)?(?:generate|create|make|build|produce|synthesi[sz]e)\b",
    r"(?:an?\s+|the\s+)?(?:synthetic\s+)?(?:instruction\s+|sft\s+|preference\s+|dpo\s+|chat\s+|training\s+)?"
    r"(?:dataset|data\s*set|data|corpus|set|collection)(?:\s+(?:of|for|about|on|with)\b|\s*[:\-]|$)",
    r"(?:an?\s+|some\s+)?(?:user\s+)?(?:questions|queries|prompts|instructions|conversations|dialogues|examples)"
    r"(?:\s+(?:and\s+answers\s+)?(?:of|for|about|on|from)\b|\s*[:\-])",
    r"(?:an?\s+)?(?:ai\s+)?(?:assistant|chatbot|bot)\s+(?:for|that\s+helps\s+(?:users\s+)?with|to\s+help\s+with)\b",
]
_LEAD_RE = re.compile(r"^\s*(?:" + "|".join(_LEADS) + r")\s*[:\-,]?\s*", re.IGNORECASE)
#: Punctuation stripped from both ends of a description (a quote pair wrapping it goes too).
_ENDS = " .!?;:,"
_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def _trim(text: str) -> str:
    """``text`` without end punctuation and wrapping quotes (``'"Tax law?"'`` → ``'Tax law'``)."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip(_ENDS)
        if len(text) >= 2 and _PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1]
    return text


def describe_topic(description: str) -> str:
    """The topic of a description: ``"A dataset of questions about bike repair."`` → ``"bike repair"``.

    Whitespace is collapsed, quotes and end punctuation are stripped, double quotes inside become
    single ones (the prompt quotes the topic), and a capitalised first word is lower-cased
    unless it looks like a name (``API``, ``iPhone``). What remains may be any phrase.
    """
    whole = _trim(" ".join(description.split()))
    text = whole
    previous = None
    while (
        previous != text
    ):  # peel leading phrases one at a time ("I want to generate a dataset of …")
        previous = text
        text = _trim(_LEAD_RE.sub("", text, count=1))
    if not text:
        text = whole
    text = text.replace('"', "'").replace("“", "'").replace("”", "'")
    first, _, rest = text.partition(" ")
    if first[:1].isupper() and first[1:].islower():
        text = first.lower() + (" " + rest if rest else "")
    return text


#: The template's sentences; ``{topic}`` is only ever quoted after a colon.
TEMPLATE = (
    'You are an AI assistant. Users come to you with questions and requests on this topic: "{topic}". '
    "Answer each one accurately, clearly and concisely."
)


def template_prompt(description: str) -> str:
    """A deterministic, user-query-focused system prompt for ``description`` (:data:`TEMPLATE`).

    Raises :class:`~datamill.errors.ConfigError` when the description is empty or has no words.
    """
    topic = describe_topic(description or "")
    if not re.search(r"\w", topic):
        raise ConfigError("describe the dataset first, e.g. 'customer support for a bike shop'")
    return TEMPLATE.format(topic=topic)


@dataclass
class Draft:
    """A drafted system prompt and where it came from (``model`` or ``template``), with a note."""

    text: str
    source: str
    note: str = ""


_LABEL_RE = re.compile(
    r"^\s*(?:\*\*)?(?:system\s*prompt|prompt|answer|output)(?:\*\*)?\s*[:\-]\s*", re.IGNORECASE
)


_STOP = {
    "with",
    "about",
    "from",
    "that",
    "this",
    "your",
    "their",
    "they",
    "help",
    "helps",
    "users",
    "user",
}


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 3 and w not in _STOP}


def clean_model_draft(raw: str, description: str = "") -> str | None:
    """The usable system prompt in a model's answer, or ``None`` when there is none.

    Keeps the first paragraph, drops labels ("System prompt:") and wrapping quotes, and accepts it
    only if it addresses the assistant ("You are a…", "You're an…") and, when ``description`` is
    given, shares a content word with it (a small model may copy the worked example instead).
    """
    text = raw.strip()
    text = _LABEL_RE.sub("", text)
    text = text.split("\n\n")[0].strip()
    text = " ".join(text.split()).strip("\"'“”` ")
    text = _LABEL_RE.sub("", text)
    if not re.match(r"you(?:\s+are|'re|’re)\s+(?:a|an|the)\b", text, re.IGNORECASE):
        return None
    text = text[0].upper() + text[1:]
    if len(text.split()) < 6:
        return None
    if description and not _content_words(text) & _content_words(describe_topic(description)):
        return None
    if len(text) > 600:  # keep whole sentences up to ~600 characters
        cut = text[:600]
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
        text = cut[: end + 1] if end > 0 else cut
    return text


def draft_request_text(description: str) -> str:
    """The user message that asks a model to draft the system prompt (from a template file)."""
    from ..tasks.base import template

    return (
        template("ui_draft_system_prompt.jinja2")
        .render(description=" ".join(description.split()))
        .strip()
    )


def draft_with_model(
    description: str, model: object, *, max_tokens: int = 96, cache: object = True
) -> Draft:
    """Ask ``model`` (a spec string or a Model) for a system prompt; fall back to the template.

    Runs through :class:`datamill.Pipeline` like every job, so the call is cached: asking again
    for the same description costs nothing.
    """
    from ..pipeline.graph import Pipeline
    from ..tasks.text_generation import TextGeneration

    fallback = template_prompt(description)  # validates the description before any model call
    step = TextGeneration(output="draft", max_tokens=max_tokens, temperature=0.3, truncated="keep")
    pipeline = Pipeline(
        [step],
        source=[{"instruction": draft_request_text(description)}],
        models={"default": model},
        name="ui-draft",
    )
    result = pipeline.run(None, cache=cache)
    if not result.rows:
        reason = result.failures[0]["reason"] if result.failures else "no answer"
        return Draft(
            fallback, "template", f"the model gave no usable draft ({reason}); using the template"
        )
    cleaned = clean_model_draft(str(result.rows[0].get("draft", "")), description)
    if cleaned is None:
        return Draft(
            fallback,
            "template",
            "the model's draft did not read as a system prompt for this topic; using the template",
        )
    return Draft(cleaned, "model", "drafted by the model; edit it freely")
