# Put first on PYTHONPATH to make psutil unimportable, so modules take their /proc reader.
raise ImportError('psutil is blocked for this test run (tests/lib/no_psutil)')
