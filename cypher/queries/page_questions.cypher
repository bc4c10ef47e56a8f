// The questions generated about one page of a document, with their answers, evidence and validation:
// verdict (valid / invalid / unvalidated) and score 0..1. Set $validated_only to true to list only the
// questions that the validation pass accepted, and $min_score to drop weak ones.
// Parameters: $document (path, file name or id), $page (a page number), $validated_only (true/false),
//   $min_score (0..1).
//   :param document => 'report.pdf'
//   :param page => 1
//   :param validated_only => false
//   :param min_score => 0.0
MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk)<-[:FROM_CHUNK]-(q:Question)
WHERE (d.path = $document OR d.name = $document OR d.id = $document)
  AND c.page_start <= $page AND $page <= c.page_end
  AND (NOT $validated_only OR q.verdict = 'valid')
  AND coalesce(q.score, 0.0) >= $min_score
RETURN q.question AS question, q.answer AS answer, q.evidence AS evidence, q.verdict AS verdict,
       q.score AS score, c.page_start AS page_start, c.page_end AS page_end
ORDER BY score DESC, question
