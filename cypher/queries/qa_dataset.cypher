// A QA dataset: every question the validation pass accepted, with its answer, evidence and citation
// (document path, pages), best first. Export it from Browser as CSV or JSON.
// Parameters: $min_score (0..1).
//   :param min_score => 0.5
MATCH (q:Question)-[:FROM_CHUNK]->(c:Chunk)<-[:HAS_CHUNK]-(d:Document)
WHERE q.verdict = 'valid' AND q.score >= $min_score
RETURN q.question AS question, q.answer AS answer, q.evidence AS evidence, q.score AS score,
       d.path AS document, c.page_start AS page_start, c.page_end AS page_end
ORDER BY score DESC, document, page_start
