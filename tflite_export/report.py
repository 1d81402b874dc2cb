"""The export report as a short markdown table."""


def _ms(entry):
    return f"{entry['latency']['median_ms']:.3f}"


def markdown(report):
    """Renders `export_and_verify`'s report as markdown: one row per file, then TFLite Micro and the checks.

    Args:
        report: Dict returned by `export_and_verify`.

    Returns:
        Str, markdown.
    """
    keras_row = report["keras"]
    robust = report.get("robustness") or {}
    lines = [
        f"# TFLite export: {report['model']['name']}",
        "",
        f"Validation: {report['data']['val_images']} images ({report['data']['source']}); "
        f"{report['model']['params']:,} parameters, {report['model']['macs']:,} MACs per image; "
        "latency: LiteRT, 1 thread, batch 1, median.",
        "",
        "| model | size (KiB) | accuracy | argmax agreement | max abs logit diff | latency (ms) | PGD robust acc. | Edge TPU |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    keras_robust = robust.get("keras", {}).get("robust_accuracy")
    lines.append(
        f"| Keras (float) | | {keras_row['accuracy']:.4f} | 1 | 0 | | "
        f"{'' if keras_robust is None else f'{keras_robust:.4f} (white-box)'} | |"
    )
    for variant, entry in report["variants"].items():
        transfer = robust.get(variant, {}).get("transfer_robust_accuracy")
        edgetpu = report["edgetpu"].get(variant, {})
        lines.append(
            f"| {entry['file']} | {entry['size_bytes'] / 1024:.1f} | {entry['accuracy']:.4f} | "
            f"{entry['argmax_agreement']:.4f} | {entry['max_abs_logit_diff']:.2e} | {_ms(entry)} | "
            f"{'' if transfer is None else f'{transfer:.4f} (transfer)'} | "
            f"{'pass' if edgetpu.get('passed') else 'fail' if edgetpu else ''} |"
        )
    if robust:
        lines += [
            "",
            f"PGD: epsilon {robust['epsilon'] * 255:.0f}/255, step {robust['step'] * 255:.0f}/255, "
            f"{robust['steps']} steps, {robust['images']} images, crafted on the Keras model.",
        ]
    micro = report.get("micro")
    if micro:
        lines += [
            "",
            f"TFLite Micro (int8): {micro['images']} images, tensor arena {micro['arena_bytes']:,} bytes "
            f"({micro['arena_bytes'] / 1024:.1f} KiB). Against LiteRT's reference kernels: max difference "
            f"{micro['vs_litert_reference']['max_abs_diff_steps']} quantisation steps "
            f"({micro['vs_litert_reference']['exact_match_fraction']:.0%} of images bit-exact); against default "
            f"LiteRT (XNNPACK): max difference {micro['vs_litert']['max_abs_diff_steps']} steps, argmax agreement "
            f"{micro['vs_litert']['argmax_agreement']:.4f}.",
        ]
    for variant, check in report["edgetpu"].items():
        if not check["passed"] and variant == "int8":
            lines += ["", "Edge TPU (int8) fails: " + "; ".join(check["reasons"])]
    lines += ["", "| check | value | pass |", "|---|---:|---|"]
    for name, check in report["criteria"].items():
        lines.append(f"| {name} | {check['value']} | {'yes' if check['passed'] else 'NO'} |")
    return "\n".join(lines) + "\n"
