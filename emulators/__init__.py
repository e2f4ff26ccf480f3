"""Local emulators of the provider wire protocols voicegate uses (Deepgram live STT, OpenAI,
ElevenLabs TTS, Twilio REST), served from one Starlette app so the official SDKs' own code runs
against them in tests and benchmarks. See `emulators.server.running_emulators` and `emulators.cli`.
"""
