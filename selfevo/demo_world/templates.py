"""The demo world's prompt templates: short forms its character-level model learns from its
meta-skill data (the general templates are far longer than its context can use well)."""

TEMPLATES: dict[str, str] = {
    "answer": "{question}",
    # {answer} is the response's final answer, not all of it (see selfevo.demo_world.oracle).
    "feedback": "{question}\nCheck: {answer}",
    # The question comes last, next to where the refinement starts: the char model learned to
    # read operands a few dozen characters back, and misread them from the far end of a
    # critique (refinements copied "778+738" as "767+786").
    "refine": "Fix: {answer}\n{feedback}\n{question}",
    "assess_quality": "{question}\nRate: {answer}",
    "assess_following": "{question}\nForm: {equation}",
    "synthesize": "New problems:\n{examples}",
    "mistake_induce": "{question}\nMistake:",
    "mistake_analyze_guided": "{question}\nFlawed: {answer}",
    "mistake_analyze": "{question}\nCheck: {answer}",
}
