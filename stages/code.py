"""DVC stage `code`: one digest file per stage of the project files its module imports (pipeline.code_deps).

Every other stage depends on its digest file, so that editing a file re-runs exactly the stages that import
it, directly or not. Takes a few seconds (it imports the model registry)."""
from pipeline import paths
from pipeline.code_deps import all_stage_code, digest_text
from pipeline.io import atomic_dir


def main() -> None:
    with atomic_dir(paths.CODE_DIGESTS_DIR) as tmp:
        for name, files in all_stage_code().items():
            (tmp / name).write_text(digest_text(files))
    print(f"[code] {len(list(paths.CODE_DIGESTS_DIR.iterdir()))} stage digests in {paths.CODE_DIGESTS_DIR}")


if __name__ == "__main__":
    main()
