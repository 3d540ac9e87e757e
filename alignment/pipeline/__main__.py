"""python -m alignment.pipeline: the iterative driver (alignment/pipeline/driver.py; --help lists its flags)."""
from alignment.pipeline.driver import main

if __name__ == "__main__":
    main()
