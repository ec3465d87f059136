"""The rubric and the AI-rater prompts of the blinded study, as data (paper App K).

The text is the paper's, word for word. The text extraction we read lost the
digits of the rubric's bullets ("defined on a - scale", ": the shared concept ...");
they are the scores 1 to 4 in order, as the system prompt spells out. The system
prompt's answer format is printed on one line in the extracted text; the user prompt
gives the same format on two lines, which is what :func:`~.ai_client.parse_answer`
accepts.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

#: App K, "Scoring rubric": score -> description (higher = clearer shared concept).
RUBRIC: Mapping[int, str] = MappingProxyType({
    1: "the shared concept cannot really be seen, or the images are too unclear or uninformative;",
    2: "there is only a weak or vague hint of a shared concept;",
    3: "the shared concept is reasonably visible and supported by useful visual evidence;",
    4: "the shared concept is very clear and strongly supported by visually informative images.",
})
RUBRIC_SUMMARY = ("A higher score indicates that the generated image set provides clearer and more visually "
                  "informative evidence for a shared semantic concept.")
#: App K, "Human raters": what a human rater provides for each grid.
HUMAN_INSTRUCTIONS = ("For each grid, they are asked to provide: (i) a short free-form description of the shared "
                      "semantic meaning, and (ii) an interpretability score according to the above rubric.")
#: App K, task statement shown before the rubric.
TASK = ("Each rater is asked to identify the most salient concept shared by the four images and assign an "
        "interpretability score.")

#: App K, "AI raters": the system prompt.
SYSTEM_PROMPT = (
    "You are a visual concept summarizer.\n"
    "The user will provide one image arranged as a 2x2 grid containing four sub-images. Identify the most salient "
    "shared concept across all provided images. Focus only on what is common to all images, and ignore "
    "image-specific details. Then rate how clearly this shared concept is supported by the image on a scale from 1 "
    "to 4, where 1 means the concept cannot really be seen or the images are too unclear or uninformative, 2 means "
    "there is only a weak or vague hint of a shared concept, 3 means the shared concept is reasonably visible and "
    "supported by useful visual evidence, and 4 means the shared concept is very clear and strongly supported by "
    "visually informative images. Return exactly two lines in the following format: concept: <short sentence under "
    "20 words> score: <1-4 integer>. Do not provide any explanation or extra text."
)
#: App K, "AI raters": the user prompt (sent with the grid image).
USER_PROMPT = (
    "This is a single 2x2 grid image containing four related sub-images. Identify the shared concept they point to, "
    "and rate how clearly that concept is visible from 1 to 4. Return exactly in this format:\n"
    "concept: <short sentence>\n"
    "score: <1-4 integer>"
)
