"""Text -> speech (PCM16 mono 24 kHz) behind a small interface; the default engine is eSpeak NG."""
