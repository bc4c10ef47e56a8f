// Documents that could not be read (not a PDF, encrypted without a password, a read timeout...), with the
// reason; the next ingest tries them again.
// Parameters: none.
MATCH (d:Document)
WHERE d.status = 'failed'
RETURN d.path AS path, d.reason AS reason
ORDER BY path
