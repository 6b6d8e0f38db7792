"""One module per tokenizer kind: how its ``tokenize@<name>`` trains it and how its ``semantic_ids@<name>`` derives
every item's codes (the registry: ``pipeline.tokenizers.registry``; the schemas: ``pipeline.tokenizer_schemas``)."""
