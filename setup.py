from setuptools import find_packages, setup

setup(
    name="posguard",
    version="0.1.0",
    description="Opens and guards perpetual-futures positions: never naked, never closed only in our DB.",
    python_requires=">=3.11",
    # tests.support ships too: the benchmarks (bench/) drive the same simulated venue, emulators and
    # deployments as the tests, and import them as a package rather than editing sys.path.
    packages=find_packages(include=["actors", "actors.*", "supervisor", "supervisor.*",
                                    "adapters", "adapters.*", "tests", "tests.support"]),
    # The live page's HTML, script and style: served from the package (no build step, no CDN).
    package_data={"supervisor.dashboard": ["static/*.html", "static/*.js", "static/*.css"]},
    install_requires=[
        "thespian==4.0.1",
        "ccxt>=4.5.90",                  # the venue adapters rely on its 4.5.90 behaviour (algo orders)
        "aiohttp>=3.9",                  # the venue emulators (ccxt's async client uses it too)
        "aiosqlite>=0.20",
        "asyncpg>=0.29",                 # the journal on PostgreSQL, shared by a fleet's hosts
        "loguru>=0.7",
        "prometheus-client>=0.20",
        "pydantic>=2.6,<3",              # the config schemas (supervisor/config/schema.py)
        "annotated-types>=0.6",          # the bounds beside each setting (adapters/bounds.py)
        "rich>=13",                      # the status table and live view, imported only to draw them (views.py)
    ],
    extras_require={
        # playwright: drives Debian's Chromium (tests/os-packages.sh) in the live page's browser test.
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6", "playwright>=1.40"],
    },
    entry_points={"console_scripts": ["posguard=supervisor.cli:main"]},
)
