"""Whether the optional torchcodec decoder can run here (the tests comparing decoders skip with this reason)."""


def torchcodec_missing() -> str | None:
    """``None`` when torchcodec and FFmpeg's shared libraries load, else why not."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  (also fails when FFmpeg's libraries are missing)
    except (ImportError, RuntimeError, OSError) as exc:
        return f"torchcodec with FFmpeg's shared libraries is not importable ({str(exc).splitlines()[0][:120]}); CI installs ffmpeg"
    return None


NO_TORCHCODEC = torchcodec_missing()
