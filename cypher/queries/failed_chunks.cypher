// Chunks where an extractor gave no valid reply within its retries: which extractors, why (the validation
// error) and the model's last raw reply, with the document and pages, to see what went wrong.
// Parameters: none.
MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk)
WHERE c.status = 'failed'
RETURN d.path AS document, c.index AS chunk, c.page_start AS page_start, c.page_end AS page_end,
       c.failed_extractors AS extractors, c.failure_errors AS errors, c.failure_raw AS raw_replies
ORDER BY document, chunk
