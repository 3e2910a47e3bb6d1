"""Constraint cue vocabulary for :mod:`directer.autospans`.

* :data:`ID_PATTERNS`: *phrase* cues, one list per IFEval instruction id; each match
  is constraint wording with a clear extent (``at least 300 words``, ``<<title>>``).
* :data:`GENERAL_CUES`: cues that only say a sentence is about the response
  (``your response``, ``make sure``).
* :data:`OPENER`, :data:`MODAL`, :data:`TASK_START`, :data:`LEAD_IN`: how a
  constraint-led sentence or clause opens.
* :data:`LANGUAGES`: ISO 639-1 code -> language name, for ``language:response_language``.

Patterns match the prompt with straight apostrophes and ``re.IGNORECASE``.
"""

from __future__ import annotations

import re

__all__ = [
    "GENERAL_CUES",
    "GENERAL_RES",
    "ID_PATTERNS",
    "ID_RES",
    "LANGUAGES",
    "LEAD_IN",
    "MODAL",
    "OPENER",
    "PHRASE_RES",
    "TASK_START",
]

_NUM = (
    r"(?:\d[\d,]*|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|hundred|a few|several|"
    r"a single|single)"
)
_REL = (
    r"(?:at least|at most|no more than|no less than|not more than|not less than|more than|less than|"
    r"fewer than|under|over|exactly|only|up to|a maximum of|a minimum of|maximum of|minimum of|"
    r"between|around|about|approximately|roughly|within|just)"
)


def _count(unit: str) -> str:
    """A count phrase for ``unit``: ``at least 300 words``, ``400 or more words``, ``100 words or less``."""
    return (
        rf"\b(?:{_REL}\s+)?{_NUM}\+?(?:\s*(?:-|to|and|or)\s*{_NUM})?"
        rf"(?:\s+or\s+(?:more|fewer|less))?[\s-]+(?:{unit})\b(?:\s+or\s+(?:more|less|fewer))?"
    )


_QUOTED = r"[\"“'‘][^\"“”'‘’\n]{1,60}[\"”'’]"
_QUOTED_LIST = rf"{_QUOTED}(?:(?:\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+){_QUOTED})*"
_LOWER = r"lower[\s-]?case(?:d)?"
_CAPITAL = r"(?:capital|upper[\s-]?case|capitalized)"

#: Language names for ``language:response_language`` (ISO 639-1 code -> name).
LANGUAGES = {
    "en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian", "pt": "Portuguese",
    "ru": "Russian", "ja": "Japanese", "ko": "Korean", "zh": "Chinese", "ar": "Arabic", "hi": "Hindi",
    "bn": "Bengali", "te": "Telugu", "ta": "Tamil", "mr": "Marathi", "kn": "Kannada", "pa": "Punjabi",
    "gu": "Gujarati", "ur": "Urdu", "fa": "Persian", "sw": "Swahili", "vi": "Vietnamese", "th": "Thai",
    "fi": "Finnish", "ne": "Nepali", "bg": "Bulgarian", "he": "Hebrew", "tr": "Turkish", "nl": "Dutch",
    "el": "Greek", "pl": "Polish", "id": "Indonesian", "sv": "Swedish", "uk": "Ukrainian", "ro": "Romanian",
}  # fmt: skip
_LANG = "|".join(sorted(set(LANGUAGES.values()) | {"Farsi", "Mandarin"}))

#: Phrase cues per IFEval instruction id. Each match is constraint wording with a clear
#: extent; the lists serve detection (rule 2) and the coverage definition.
ID_PATTERNS: dict[str, list[str]] = {
    "punctuation:no_comma": [
        r"(?:(?:\b(?:without|with no|no|not|avoid|refrain from|never)|\b\w+n't)\s+(?:\w+\s+){0,3}?)?(?:any\s+)?commas?\b",
    ],
    "length_constraints:number_words": [
        _count(r"words?"),
        r"\bword (?:count|limit)\b",
        r"\b(?:total\s+)?number of words\b",
    ],
    "length_constraints:number_sentences": [
        _count(r"sentences?"),
        r"\b(?:one|single) sentence\b",
        r"\b(?:total\s+)?number of sentences\b(?:[^.\n]{0,40}?\brange of\s+\d+\s+to\s+\d+)?",
    ],
    "length_constraints:number_paragraphs": [
        _count(r"paragraphs?|sections?|parts?"),
        r"\bmarkdown divider\b(?:\s*:?\s*\*\*\*)?",
        r"(?<!\*)\*\*\*(?!\*)",
        r"\bparagraphs?\s+(?:\w+\s+){0,2}separated\b(?:\s+(?:by|with)\s+(?:[\w*\"'-]+\s+){0,4}?"
        r"(?:new ?lines?|line ?breaks?|\*\*\*|divider|asterisks?(?:\s+symbols?)?))?",
        r"\bseparate(?:d)?\s+(?:the\s+|each\s+)?paragraphs?\b",
    ],
    "length_constraints:nth_paragraph_first_word": [
        r"\bfirst word\b",
        r"\b(?:paragraph|response|answer)\s+(?:\w+\s+){0,2}?(?:start|begin)s?\s+with\b",
        r"\b(?:start|begin)(?:s|ning)?\s+with\s+the\s+word\b",
        r"\b(?:start|begin)s?\s+(?:the\s+)?(?:(?:first|second|third|fourth|fifth|last|\d+(?:st|nd|rd|th)?)\s+)?"
        r"paragraph(?:\s+\d+)?\s+with\b",
    ],
    "change_case:english_lowercase": [
        rf"\b(?:(?:in|using|use|with|written in|all in)\s+)?(?:all\s+|only\s+)?{_LOWER}(?:\s+(?:letters?|characters?|english))?\b",
        r"\b(?:no|without|avoid|not|never)\s+(?:\w+\s+){0,2}?(?:capital(?:s|\s+letters?)?|capitali[sz]ations?)\b",
        r"\bcapital letters?\s+(?:are|is)\s+(?:not\s+allowed|forbidden|prohibited)\b",
        r"\bnot a single letter\b(?:\s+[\w']+){0,6}?\s+capitali[sz]ed\b",
    ],
    "change_case:english_capital": [
        rf"\b(?:(?:in|using|use|with|written in|all in)\s+)?(?:all\s+|only\s+)?{_CAPITAL}\s+(?:letters?|characters?|form)\b",
        r"\b(?:in\s+)?all\s+caps\b",
        r"\bcapitali[sz]e\s+(?:all|every|each)\b(?:\s+(?:of\s+)?(?:your\s+|the\s+)?(?:words?|letters?))?",
        r"\b(?:should|must)\s+be\s+capitali[sz]ed\b",
        rf"\bno\s+{_LOWER}(?:\s+letters?)?(?:\s+(?:are\s+|is\s+)?allowed)?",
    ],
    "change_case:capital_word_frequency": [
        r"\bwords?\s+(?:with|in)\s+all\s+capital(?:\s+letters)?\b",
        r"\b(?:all[\s-])?capital(?:ized)?\s+words?\b",
        r"\b(?:in\s+)?all[\s-]caps\b(?:\s+words?)?",
        r"\bstress words\b|\bwords which are capitali[sz]ed\b",
        rf"\b(?:in\s+)?all\s+{_CAPITAL}\s+letters\b",
    ],
    "keywords:existence": [
        rf"\b(?:include|includes|including|contain|contains|containing|mention|mentions|mentioning|use|using|"
        rf"uses|with|has|have|add)\s+(?:the\s+)?(?:following\s+)?(?:(?:key)?words?|phrases?|lines?|terms?)\s*:?\s*"
        rf"{_QUOTED_LIST}",
        rf"\b(?:mention|include|use)\s+{_QUOTED_LIST}",
        r"\b(?:include|includes|including|contain|contains|containing|use|using)\s+(?:the\s+)?(?:key)?words\s*:?\s+"
        r"[\w-]+(?:(?:\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+)[\w-]+)+",
        r"\b(?:include|includes|including|contain|contains|containing|use|using|with)\s+(?:the\s+)?(?:following\s+)?"
        r"keywords?\b",
    ],
    "keywords:forbidden_words": [
        rf"\b(?:do not|don't|never|avoid|without|refrain from|not)\s+(?:(?:use|using|include|including|mention|"
        rf"mentioning|say|saying|contain|containing|write|writing)\s+)?(?:(?:the|any|these|those|following)\s+)*"
        rf"(?:key)?words?\b(?:\s*:?\s*{_QUOTED_LIST})?",
        rf"\b(?:do not|don't|never|avoid|without|refrain from|not)\s+(?:use|using|include|including|mention|"
        rf"mentioning|say|saying|contain|containing)\s+{_QUOTED_LIST}",
        r"\bexclude\b",
    ],
    "keywords:frequency": [
        _count(r"times?"),
        rf"\b(?:the\s+)?(?:key)?word\s+(?:{_QUOTED}|[\w-]+)(?:\s+(?:should|must|to)?\s*(?:appear|appears|be used|occur|"
        rf"be mentioned))?\s+(?:(?:for|in)\s+)?(?:{_REL}\s+)?(?:{_NUM}|once|twice|thrice)"
        rf"(?:\s+(?:or\s+(?:more|less|fewer|{_NUM})|to\s+{_NUM}))?(?:\s+times?)?\b",
        rf"\b{_REL}\s+(?:once|twice|thrice)\b",
        r"\b(?:once|twice|thrice)\s+or\s+more\b",
    ],
    "keywords:letter_frequency": [
        r"\b(?:the\s+)?letters?\s+[\"“'‘]?[a-z#!][\"”'’]?(?![\w'’])",
        r"\bhashtags?\b",
        r"\bexclamation (?:marks?|points?)\b",
        _count(r"times?"),
    ],
    "detectable_format:number_highlighted_sections": [
        r"\bhighlight(?:ed|s|ing)?\s+(?:(?:at least|at most|exactly)\s+)?(?:[\w/-]+\s+){0,3}?(?:sections?|parts?|"
        r"text|words?|phrases?|key points|name)\b(?:\s+(?:[\w/-]+\s+){0,4}?(?:with|in|using)\s+markdown(?:\s+format)?)?",
        r"\bhighlight(?:ed|s|ing)?\b(?:\s+[\w/-]+){0,6}?\s+(?:with|in|using|by)\s+(?:markdown|[\"']?\*)",
        r"\b(?:use|using)\s+(?:markdown|\*|the asterisk symbol)\b(?:[^.\n]{0,30}?)\s+to\s+highlight\b",
        r"\*highlighted section[^*\n]*\*",
        r"\bitalici[sz](?:e|es|ed|ing)\b(?:\s+(?:at least|at most|exactly)?\s*\w+)?(?:\s+(?:\w+\s+){0,3}?"
        r"(?:sections?|parts?|text|words?|phrases?|names?|keywords?))?",
        rf"\b(?:{_NUM}\s+)?italic(?:s|\s+text)?(?:\s+(?:text\s+)?(?:sections?|phrases?|parts?))?\b",
    ],
    "detectable_format:title": [
        r"<<[^<>\n]*>>",
        r"\bdouble angular brackets\b",
        r"\b(?:with|include|including|contain|containing|has|have|give it|add|need|needs)\s+(?:a|the)\s+title\b"
        r"(?:\s+(?:\w+\s+){0,3}?(?:in|with|within)\s+double angular brackets)?",
    ],
    "detectable_format:json_format": [
        r"\b(?:in|as|using|use|with|into)\s+(?:a\s+|the\s+|valid\s+)?JSON(?:\s+(?:format|block|object|output))?\b",
        r"\bJSON\s+(?:format|block|code block|object|output)\b",
    ],
    "detectable_format:number_bullet_lists": [
        rf"\b(?:{_REL}\s+)?(?:{_NUM}\s+)?(?:(?:very\s+)?(?:short|long|brief|concise|markdown)\s+)*"
        r"bullet(?:s|\s+points?|\s+lists?)?\b(?:\s+(?:such as|like|as follows|in the following (?:form|format))\s*:)?",
    ],
    "detectable_format:multiple_sections": [
        r"\b(?:section|paragraph|part|day|chapter|slide|act|audience)\s+(?-i:X)(?!\w)",
        _count(r"sections?|parts?"),
    ],
    "detectable_format:constrained_response": [
        r"\bMy answer is (?:yes|no|maybe)\b\.?",
        r"\b(?:answer|respond|reply) with one of\b",
    ],
    "startend:end_checker": [
        r"\b(?:end|ends|ending|finish|finishes|conclude|concludes)\s+"
        r"(?:(?:your|the|it|this|that|each|every|my|its|them)\b(?:\s+\w+){0,3}?\s+)?with\b",
        r"\b(?:very\s+)?last\s+(?:sentence|line|word|words|phrase)\b",
        r"\bexact phrase\b",
        r"\bno other words?\s+(?:should\s+)?follow",
    ],
    "startend:quotation": [
        r"\bdouble[\s-]quot(?:e|es|ations?)(?:\s+marks?)?\b",
        r"\bquotation marks?\b",
    ],
    "detectable_content:postscript": [
        r"\b(?:(?:with|add|include|end it with)\s+)?(?:a\s+|an\s+)?post[\s-]?script\b"
        r"(?:\s+(?:starting|beginning)\s+with\s+(?-i:P\.(?:P\.)?S)\.?)?",
        r"(?<!\w)(?-i:P\.(?:P\.)?S)(?:\.|\b)",
    ],
    "detectable_content:number_placeholders": [
        _count(r"placeholders?"),
        r"\bplaceholders?\b",
        r"\bsquare brackets\b",
    ],
    "combination:repeat_prompt": [
        r"\brepl?eat(?:s|ed|ing)?\s+(?:[\w-]+\s+){0,3}?(?:request|sentence|prompt|question|text|line|instructions?|"
        r"it|above|below)\b(?:\s+(?:above|below))?",
        r"\bword (?:for|by) word\b",
    ],
    "combination:two_responses": [
        r"\*{6}",
        r"\b(?:six|6)\s+asterisk(?:s|\s+symbols?)?\b",
        r"\btwo\s+(?:different\s+)?(?:responses|answers|versions)\b",
    ],
    "language:response_language": [
        rf"\b(?:in|using|use|only in|only using|entirely in|written in|respond in|in entirely|completely in)\s+"
        rf"(?:only\s+)?(?:the\s+)?(?:{_LANG})(?:\s+language)?\b",
        r"\bno other languages?\b(?:\s+(?:is|are)\s+allowed)?",
    ],
}

#: General cues: they show that a sentence talks about the response, but have no
#: extent of their own (rule 2).
GENERAL_CUES = [
    r"\b(?:your|the)\s+(?:entire\s+|whole\s+|full\s+|final\s+)?(?:response|answer|reply|output)\b",
    r"\b(?:make sure|be sure|ensure|remember to)\b",
    r"\b(?:do not|don't|dont|never|avoid|refrain from)\s+(?:\w+\s+)?(?:use|using|include|including|say|saying|"
    r"mention|mentioning|add|adding|write|writing|put|contain|containing|respond|answer|reply|exceed)\b",
    r"\bwithout\s+(?:using|use of|any|mentioning|including|saying|the\s+(?:word|letter)s?)\b",
    r"\bwrap(?:s|ped|ping)?\s+(?:\w+\s+){0,3}?(?:response|answer|output|reply|it|everything|in|with|around)\b",
    r"\bseparat(?:e|ed|ing)\s+(?:[\w'-]+\s+){0,4}?(?:by|with|using)\s+(?:[\w'-]+\s+){0,3}?"
    r"(?:\*|asterisks?|divider|new ?lines?|line ?breaks?|blank lines?|symbols?|dashes|markdown)",
    r"\bin\s+(?:\w+\s+)?markdown\b|\bmarkdown format\b",
    r"\b(?:should|must)\s+(?:not\s+)?(?:contain|include|start with|begin with|end with|appear)\b",
    r"\bno other (?:words?|text|characters?)\b|\bnothing else\b",
    r"\b(?:respond|reply|answer)\s+(?:with|in|using|only)\b",
    r"\bnot allowed\b",
    r"\bJSON\b",
    r"\b(?:do not|don't|never)\s+(?:change|alter|modify|output|say|write|add)\b",
]

# Sentence or clause openers that make a unit constraint-led (rule 3). Only consulted
# for units that already hold a cue.
OPENER = re.compile(
    r"(?:do not|don't|dont|never|avoid|refrain|no|not|without|only|make sure|making sure|make it|make your|"
    r"be sure|ensure|remember|note|your|you (?:\w+ )?(?:must|should|need|have|are|cannot|can't|may|will|can)|"
    r"in your|in the (?:entire |whole )?(?:response|answer|output)|throughout|each|every|all|both|use|using|"
    r"include|including|mention|contain|wrap|put|enclose|surround|highlight|(?:answer|respond|reply) (?:to me )?"
    r"(?:with|in|using|only)|finish|end|conclude|at the end|start|begin|first|repeat|let's|before|after|"
    r"separate|format|organize|label|mark|add|give (?:me )?(?:exactly|two|your|it)|provide (?:exactly|two|your)|"
    r"keep|limit|capitalize|stick|stay|title|have|p\.?p?\.?s|write (?:in|using|it|your|everything|the entire|"
    r"the whole|with|without|at least|no more|all)|i (?:want|would like|'d like|need) (?:for )?(?:there|the|your|"
    r"it|you to (?:use|write in|include|wrap|end|answer|respond)))\b",
    re.IGNORECASE,
)
# A subject of up to seven words and a modal: "The very last sentence of your response should ...".
MODAL = re.compile(
    r"(?:[\w'\"“”-]+\s+){0,7}?(?:must|should|shall|cannot|can't|needs? to|has to|have to|may not|(?:is|are) not allowed|"
    r"(?:is|are) (?:separated|marked|indicated|wrapped|highlighted|enclosed))\b",
    re.IGNORECASE,
)
# Sentences that open like a request for the task are never led by a modal.
TASK_START = re.compile(
    r"(?:write|compose|create|generate|draft|make|give|explain|describe|summari[sz]e|rewrite|tell|list|name|plan|"
    r"design|suggest|imagine|can|could|would|will|what|how|why|who|where|when|which|is|are|do|does|did|i|we|"
    r"help|come|provide|elaborate|expand|produce|prepare|find|translate|complete|solve|answer|continue|pretend|"
    r"act|take|let|if|given|here)\b",
    re.IGNORECASE,
)
# Words stripped from the start of a unit before the opener test.
LEAD_IN = re.compile(
    r"^(?:[\s\-*•(\[]|\d{1,2}[.)]\s)*(?:(?:please|also|and|but|then|finally|lastly|additionally|"
    r"in addition|besides|moreover|furthermore|importantly|again|so|now|note that|remember that)\b[\s,:]*)*",
    re.IGNORECASE,
)

ID_RES = {k: [re.compile(p, re.IGNORECASE) for p in v] for k, v in ID_PATTERNS.items()}
PHRASE_RES = [r for rs in ID_RES.values() for r in rs]
GENERAL_RES = [re.compile(p, re.IGNORECASE) for p in GENERAL_CUES]
