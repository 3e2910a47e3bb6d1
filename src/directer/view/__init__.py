"""The per-token steering view: a self-contained HTML page of what the steering did at each step
(``html``, with its style sheet ``steering_view.css``)."""
