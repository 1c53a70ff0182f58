"""Built-in analysis plugin: the ``linear`` and ``mlp`` probes, the ``fhs`` score and the
``json`` / ``csv`` / ``md`` / ``html`` report exporters.

Registered through the same hooks a third-party plugin uses, with lazy ``"module:attr"``
strings: importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_probes(register):
    register(
        "linear",
        "medprobe.analysis.linear:LinearProbe",
        "standardised multinomial logistic regression, C chosen on val (coarse -> fine), refit on train+val; "
        "all layers batched",
    )
    register(
        "mlp",
        "medprobe.analysis.mlp:MLPProbe",
        "the paper's probe: Linear-ReLU-Dropout(0.1)-Linear (hidden 256), AdamW 1e-4, cosine + 5% warmup, "
        "20 epochs, batch 4, epoch chosen on val; all layers batched",
    )


@hookimpl
def register_metrics(register):
    register(
        "fhs",
        "medprobe.analysis.fhs:fhs_metric",
        "Feature Health Score profile FHS_V -> FHS_C -> FHS_L -> P_final (lambda 0.2) of a report model entry",
    )


@hookimpl
def register_exporters(register):
    register("json", "medprobe.analysis.exporters:write_json", "report.json (versioned schema, docs/report-schema.md)")
    register("csv", "medprobe.analysis.exporters:write_csv", "report.csv: one row per model x layer x readout x probe")
    register("md", "medprobe.analysis.exporters:write_markdown", "report.md: summary, diagnosis and layer tables")
    register("html", "medprobe.analysis.exporters:write_html", "report.html: self-contained, figures embedded as PNG")
